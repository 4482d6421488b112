"""odxtargetcli against a real daemon subprocess: one-shot mode, the interactive shell through a
pseudo-terminal (pexpect), real libiscsi logins with the CHAP credentials it set, bad input, and
the configuration coming back after a restart."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from odxtarget.admin.client import AdminClient
from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
from tests.integration.raw_initiator import RawInitiator, sense_triplet
from tests.support import libiscsi
from tests.support.copy_cdbs import pt_cdb, rrti_cdb, wut_cdb
from tests.support.daemon import REPO_ROOT, DaemonProcess, DaemonSpec, LunSpec, MIB

pytestmark = pytest.mark.integration

TARGET = "iqn.2026-11.org.example:shell"
INITIATOR = "iqn.2026-11.org.example:host1"
USER, SECRET, WRONG = "alice", "twelve-chars1", "twelve-chars2"
TPG = f"/iscsi/{TARGET}/tpg1"
PROMPT = r"/\S*> "
SOCKET_TIMEOUT = 15.0


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["NO_COLOR"] = "1"
    env.pop("ODXTARGET_CONTROL_SOCKET", None)
    return env


class Cli:
    """Runs ``odxtargetcli --socket SOCK <command>`` (``python -m odxtarget.admin``)."""

    def __init__(self, socket_path: Path):
        self.socket_path = socket_path

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "odxtarget.admin", "--socket", str(self.socket_path)]

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv() + list(command), capture_output=True, text=True, env=environment(),
                              timeout=60)

    def ok(self, *command: str) -> str:
        result = self.run(*command)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        return result.stdout

    def fails(self, *command: str) -> str:
        """The one-line error of a refused command (nothing on stdout, exit status 1)."""
        result = self.run(*command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        return lines[0].removeprefix("Error: ")

    def config(self) -> dict:
        with AdminClient(str(self.socket_path)) as client:
            return client.call("config.get")


def wait_for_socket(path: Path) -> None:
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, f"no control socket at {path}"
        time.sleep(0.05)


@pytest.fixture
def daemon(tmp_path):
    process = DaemonProcess(DaemonSpec(luns=[LunSpec(size=4 * MIB)]), tmp_path / "daemon")
    process.start()
    try:
        wait_for_socket(process.directory / "state" / "control.sock")
        yield process
    finally:
        process.stop()


@pytest.fixture
def cli(daemon):
    return Cli(daemon.directory / "state" / "control.sock")


def iscsi_inq(daemon: DaemonProcess, lun: int, user: str, secret: str) -> subprocess.CompletedProcess:
    url = f"iscsi://{user}%{secret}@{daemon.host}:{daemon.port}/{TARGET}/{lun}"
    return subprocess.run(["iscsi-inq", "-i", INITIATOR, url], capture_output=True, text=True, timeout=30)


def build_with_one_shot_commands(cli: Cli) -> None:
    cli.ok("/backstores/extents", "create", "name=disk_a", "size=8M")
    cli.ok("/backstores/extents", "create", "disk_b", "8M", "block_size=4096")
    assert "Created target" in cli.ok("/iscsi", "create", TARGET)
    assert "Created LUN 0" in cli.ok(f"{TPG}/luns", "create", "/backstores/extents/disk_a")
    assert "Created LUN 1" in cli.ok(f"{TPG}/luns", "create", "/backstores/extents/disk_b")
    cli.ok(f"{TPG}/acls", "create", INITIATOR)
    cli.ok(f"{TPG}/acls/{INITIATOR}", "set", "auth", f"userid={USER}", f"password={SECRET}")


def test_one_shot_build_then_libiscsi_logs_in_with_the_chap_secret_only(daemon, cli):
    build_with_one_shot_commands(cli)
    tree = cli.ok("ls")
    assert "disk_a" in tree and TARGET in tree and INITIATOR in tree and "CHAP" in tree
    good = iscsi_inq(daemon, 1, USER, SECRET)
    assert good.returncode == 0, good.stderr
    assert "DIRECT_ACCESS" in good.stdout
    wrong = iscsi_inq(daemon, 0, USER, WRONG)
    assert wrong.returncode != 0
    assert "Authentication failure" in wrong.stdout + wrong.stderr


def test_bad_input_gives_one_line_and_changes_nothing(daemon, cli):
    build_with_one_shot_commands(cli)
    before = cli.config()
    assert cli.fails("/nowhere", "ls") == "No such path /nowhere"
    assert "colour" in cli.fails("/backstores/extents", "create", "x", "1M", "colour=red")
    assert 'invalid size "lots"' in cli.fails("/backstores/extents", "create", "x", "lots")
    assert cli.fails("/backstores/extents", "create", "disk_a", "1M") == 'storage object "disk_a" already exists'
    assert cli.fails("/backstores/extents", "delete", "disk_a") == (
        f'storage object "disk_a" is mapped as LUN 0 of {TARGET}; delete the LUN first')
    assert "at least 12 bytes" in cli.fails(f"{TPG}/acls/{INITIATOR}", "set", "auth", "password=short")
    assert cli.config() == before


def test_daemon_not_running_is_one_clear_line(tmp_path):
    missing = tmp_path / "control.sock"
    message = Cli(missing).fails("ls")
    assert message == f"odxtarget is not running (no control socket at {missing})"


def test_control_socket_is_root_only(daemon, cli):
    assert stat.S_IMODE(os.stat(cli.socket_path).st_mode) == 0o600


def test_saved_configuration_is_back_after_a_restart(daemon, cli):
    build_with_one_shot_commands(cli)
    saved = cli.ok("saveconfig")
    assert f"Configuration saved to {daemon.config_path}" in saved
    assert stat.S_IMODE(os.stat(daemon.config_path).st_mode) == 0o600
    assert list((daemon.directory / "backup").glob("odxtarget-*.json"))
    before = cli.config()
    daemon.restart()
    wait_for_socket(cli.socket_path)
    assert cli.config() == before
    assert iscsi_inq(daemon, 1, USER, SECRET).returncode == 0
    assert json.loads(daemon.config_path.read_text())["targets"][1]["iqn"] == TARGET


def test_sessions_lists_a_logged_in_initiator_with_its_luns_and_digests(daemon, cli):
    initiator = RawInitiator(daemon.host, daemon.port, initiator=INITIATOR)
    try:
        initiator.login(daemon.iqn, header_digest="CRC32C")
        listing = cli.ok("ls", "/sessions")
        assert "1 session" in listing
        assert f"{INITIATOR} -> {daemon.iqn}" in listing
        assert "LUNs 0" in listing and "header CRC32C data None" in listing
    finally:
        initiator.close()


def test_interactive_shell_through_a_pseudo_terminal(daemon, cli):
    shell = pexpect.spawn(cli.argv()[0], cli.argv()[1:], env=environment(), encoding="utf-8", timeout=30,
                          dimensions=(50, 200))
    try:
        shell.expect(PROMPT)
        shell.send("cd /backstores/ext\t")   # tab completion of a path
        shell.expect("extents")
        shell.sendline("")
        shell.expect(r"/backstores/extents> ")
        shell.sendline("create disk_i 4M")
        shell.expect("Created extent disk_i")
        shell.expect(PROMPT)
        shell.sendline("create disk_i 4M")          # a duplicate: an error, and the shell goes on
        shell.expect('storage object "disk_i" already exists')
        shell.expect(PROMPT)
        shell.sendline("help resize")               # help from the command's docstring
        shell.expect("No such|Cannot find|not found")  # resize lives on a storage object, not here
        shell.expect(PROMPT)
        shell.sendline("cd disk_i")
        shell.expect(r"disk_i> ")
        shell.sendline("help resize")
        shell.expect("CAPACITY DATA HAS CHANGED")
        shell.expect(PROMPT)
        shell.sendline("resize 8M")
        shell.expect("Resized disk_i from 4MiB to 8MiB")
        shell.expect(PROMPT)
        shell.sendline("/iscsi create " + TARGET)
        shell.expect("Created target")
        shell.expect(PROMPT)
        shell.sendline(f"{TPG}/luns create /backstores/extents/disk_i")
        shell.expect("Created LUN 0")
        shell.expect(PROMPT)
        shell.sendline("ls /")
        shell.expect("disk_i")
        shell.expect(PROMPT)
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close(force=True)
    config = cli.config()
    assert [t["luns"] for t in config["targets"] if t["iqn"] == TARGET] == [[{"lun": 0, "storage_object": "disk_i"}]]
    assert next(so for so in config["storage_objects"] if so["name"] == "disk_i")["size"] == "8M"


def test_tokens_and_revoke_over_iscsi(daemon, cli):
    """POPULATE TOKEN over iSCSI, the token listed, revoked, WRITE USING TOKEN then 23h/06h."""
    with AdminClient(str(cli.socket_path)) as client:
        if not client.call("status")["odx"]:
            pytest.skip("this daemon runs no copy manager yet (daemon wiring pending)")
    initiator = RawInitiator(daemon.host, daemon.port, initiator=INITIATOR)
    try:
        initiator.login(daemon.iqn)
        initiator.clear_unit_attentions()
        data = build_populate_token_list([(0, 8)])
        response, _ = initiator.command(pt_cdb(1, len(data)), data_out=data)
        assert response.status == 0
        listing = cli.ok("ls", "/odx/tokens")
        assert "1 live token" in listing and "creator disk0" in listing
        # RECEIVE ROD TOKEN INFORMATION (84h/07h): the token is the last 512 bytes of its data.
        response, rrti = initiator.command(rrti_cdb(1, 1024), data_in_len=1024)
        assert response.status == 0
        token = bytes(rrti[-512:])
        token_id = AdminClient(str(cli.socket_path)).call("odx.tokens")[0]["id"]
        assert f"Revoked token {token_id}" in cli.ok("/odx/tokens", "revoke", token_id)
        wut = build_write_using_token_list(token, [(16, 8)])
        response, _ = initiator.command(wut_cdb(2, len(wut)), data_out=wut)
        assert sense_triplet(response.sense) == (0x5, 0x23, 0x06)
    finally:
        initiator.close()



HOST_A = "iqn.2026-11.org.example:host-a"
HOST_B = "iqn.2026-11.org.example:host-b"


def dropped(session: libiscsi.IscsiSession) -> bool:
    """The target ended the session: the next command never gets a SCSI status."""
    try:
        result = session.test_unit_ready(0)
    except libiscsi.ConnectionLostError:
        return True
    return not result.acknowledged


def test_admin_changes_end_the_sessions_they_no_longer_admit(daemon, cli):
    """docs/admin.md, "Live changes": demo mode off drops initiators no ACL names, a CHAP change
    drops the sessions that authenticated with the old credentials; the others keep working."""
    tpg = f"/iscsi/{daemon.iqn}/tpg1"
    a = libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0, initiator_name=HOST_A)
    b = libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0, initiator_name=HOST_B)
    try:
        cli.ok(f"{tpg}/acls", "create", HOST_A)
        assert a.test_unit_ready(0).good and b.test_unit_ready(0).good   # ACL create drops nobody
        cli.ok(tpg, "set", "attribute", "demo_mode=false")
        assert dropped(b)
        assert a.write(0, 8, b"a" * 512, 512).good and a.read(0, 8, 1, 512).data == b"a" * 512
        assert "1 session" in cli.ok("ls", "/sessions")
        with pytest.raises(libiscsi.LoginError):                         # and B cannot come back
            libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0, initiator_name=HOST_B).close()

        cli.ok(f"{tpg}/acls/{HOST_A}", "set", "auth", f"userid={USER}", f"password={SECRET}")
        assert dropped(a)
        assert "0 sessions" in cli.ok("ls", "/sessions")
    finally:
        a.close()
        b.close()
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, lun=0, initiator_name=HOST_A,
                          chap=(USER, SECRET)) as again:
        assert again.read(0, 8, 1, 512).data == b"a" * 512
    log = daemon.log_text()
    assert (f"ending the session of initiator {HOST_B} on target {daemon.iqn}" in log
            and "demo mode turned off and no ACL names the initiator" in log)
    assert (f"ending the session of initiator {HOST_A} on target {daemon.iqn}" in log
            and "CHAP credentials changed by the administrator" in log)
