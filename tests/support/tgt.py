"""Start Debian's tgtd (Linux SCSI target framework, 1.0.85) as a reference target on loopback.

Used by ``make bench`` as the baseline and by the harness self-tests, which need a known-good
target to check the libiscsi binding and the iscsi-test-cu parser before odxtarget exists.

tgtd has two channels: the iSCSI portal (``--iscsi portal=IP:PORT``) and a management socket,
/var/run/tgtd/socket.<control port>, that ``tgtadm -C <control port>`` talks to. The control port
is only a name suffix; each instance here picks one whose socket file does not exist yet.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemon import LOOPBACK, free_port, port_accepts

TGTD = "tgtd"
TGTADM = "tgtadm"
TARGET_ID = 1
STARTUP_TIMEOUT_SECONDS = 10.0
CONTROL_SOCKET_PREFIX = "/var/run/tgtd/socket."
MAX_CONTROL_PORT = 32767


@dataclass(slots=True)
class TgtLun:
    lun: int                 # tgt reserves LUN 0 for its controller; use 1 and up
    backing_file: Path | str  # a file, or POOL/IMAGE with bstype "rbd"
    read_only: bool = False
    bstype: str | None = None   # tgt's backing store type; None: its default (rdwr)
    bsopts: str | None = None   # for rbd: "conf=PATH" (tgt-rbd)


class TgtError(RuntimeError):
    pass


def _unused_control_port(seed: int) -> int:
    """tgtd takes control ports up to 32767; pick one whose socket file does not exist."""
    for offset in range(MAX_CONTROL_PORT):
        candidate = 1024 + (seed + offset) % (MAX_CONTROL_PORT - 1024)
        if not Path(f"{CONTROL_SOCKET_PREFIX}{candidate}").exists():
            return candidate
    raise TgtError("no free tgtd control port")


def tgt_available() -> bool:
    return shutil.which(TGTD) is not None and shutil.which(TGTADM) is not None


class TgtDaemon:
    """One tgtd process with one target that admits every initiator."""

    def __init__(
        self,
        iqn: str,
        luns: list[TgtLun],
        log_path: Path,
        port: int | None = None,
        *,
        chap: tuple[str, str] | None = None,         # (user, secret) the initiator must prove
        mutual_chap: tuple[str, str] | None = None,  # (user, secret) tgtd answers with
    ) -> None:
        self.iqn = iqn
        self.chap = chap
        self.mutual_chap = mutual_chap
        self.luns = luns
        self.log_path = log_path
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self.control_port = _unused_control_port(self.port)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, lun: int) -> str:
        return f"iscsi://{self.host}:{self.port}/{self.iqn}/{lun}"

    def _tgtadm(self, *arguments: str) -> None:
        command = [TGTADM, "-C", str(self.control_port), "--lld", "iscsi", *arguments]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise TgtError(f"{' '.join(command)} failed: {completed.stderr.strip() or completed.stdout.strip()}")

    def start(self) -> TgtDaemon:
        if not tgt_available():
            raise TgtError("tgtd/tgtadm not found: install Debian's tgt (make setup)")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [TGTD, "--foreground", "--control-port", str(self.control_port),
                 "--iscsi", f"portal={self.host}:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not port_accepts(self.host, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise TgtError(f"tgtd did not start; log:\n{self.log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        # The management socket appears a little after the portal; retry the first command.
        for attempt in range(50):
            try:
                self._tgtadm("--mode", "target", "--op", "new", "--tid", str(TARGET_ID), "--targetname", self.iqn)
                break
            except TgtError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        for lun in self.luns:
            self._tgtadm("--mode", "logicalunit", "--op", "new", "--tid", str(TARGET_ID),
                         "--lun", str(lun.lun), "--backing-store", str(lun.backing_file),
                         *(["--bstype", lun.bstype] if lun.bstype else []),
                         *(["--bsopts", lun.bsopts] if lun.bsopts else []))
            if lun.read_only:
                self._tgtadm("--mode", "logicalunit", "--op", "update", "--tid", str(TARGET_ID),
                             "--lun", str(lun.lun), "--params", "readonly=1")
        self._tgtadm("--mode", "target", "--op", "bind", "--tid", str(TARGET_ID), "--initiator-address", "ALL")
        for account, outgoing in ((self.chap, False), (self.mutual_chap, True)):
            if account is None:
                continue
            user, secret = account
            self._tgtadm("--mode", "account", "--op", "new", "--user", user, "--password", secret)
            self._tgtadm("--mode", "account", "--op", "bind", "--tid", str(TARGET_ID), "--user", user,
                         *(["--outgoing"] if outgoing else []))
        return self

    def stop(self) -> None:
        """tgtd ignores SIGTERM while targets exist, and we keep no state in it: SIGKILL it and
        remove its management socket files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        for suffix in ("", ".lock"):
            Path(f"{CONTROL_SOCKET_PREFIX}{self.control_port}{suffix}").unlink(missing_ok=True)

    def __enter__(self) -> TgtDaemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
