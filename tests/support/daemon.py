"""Start the real odxtarget daemon as a subprocess for integration and conformance tests.

The daemon runs exactly as a user runs it (``python -m odxtarget serve --config FILE``) on a free
loopback port, with its storage files and log in the test's temporary directory. Tests get a
:class:`DaemonProcess` to aim initiators at, to kill (SIGKILL, for crash tests), to stop, and to
restart on the same files.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
DEFAULT_IQN = "iqn.2026-11.org.odxtarget:test"
MIB = 1024 * 1024
STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


@dataclass(slots=True)
class LunSpec:
    """One LUN backed by one sparse file of ``size`` bytes."""

    lun: int = 0
    size: int = 64 * MIB
    block_size: int = 512
    read_only: bool = False
    name: str | None = None          # storage object name; default disk<lun>
    physical_block_size: int | None = None   # e.g. 4096 on a 512-byte LUN (512e)
    removable: bool = False

    @property
    def storage_name(self) -> str:
        return self.name or f"disk{self.lun}"


@dataclass(slots=True)
class ChapSpec:
    """CHAP secrets the target demands (and, for mutual CHAP, the ones it answers with)."""

    userid: str
    password: str
    mutual_userid: str | None = None
    mutual_password: str | None = None

    def as_config(self) -> dict[str, Any]:
        return {
            "userid": self.userid,
            "password": self.password,
            "mutual_userid": self.mutual_userid,
            "mutual_password": self.mutual_password,
        }


@dataclass(slots=True)
class AclSpec:
    initiator: str
    chap: ChapSpec | None = None


@dataclass(slots=True)
class DaemonSpec:
    """What the test wants the daemon to serve; one target, one portal."""

    luns: list[LunSpec] = field(default_factory=lambda: [LunSpec()])
    iqn: str = DEFAULT_IQN
    chap: ChapSpec | None = None
    acls: list[AclSpec] = field(default_factory=list)
    demo_mode: bool | None = None    # None: True unless ACLs are given
    log_level: str = "info"
    extra_config: dict[str, Any] = field(default_factory=dict)  # merged into the top level


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class DaemonStartError(RuntimeError):
    pass


def build_config(spec: DaemonSpec, directory: Path, port: int) -> dict[str, Any]:
    """The JSON configuration for ``spec``; storage files live in ``directory``."""
    storage_objects = []
    for lun in spec.luns:
        image = directory / f"{lun.storage_name}.img"
        storage_objects.append({
            "name": lun.storage_name,
            "size": lun.size,
            "block_size": lun.block_size,
            "read_only": lun.read_only,
            **({"physical_block_size": lun.physical_block_size} if lun.physical_block_size else {}),
            **({"removable": True} if lun.removable else {}),
            "extents": [{"path": str(image), "offset": 0, "length": None}],
        })
    demo_mode = spec.demo_mode if spec.demo_mode is not None else not spec.acls
    target = {
        "iqn": spec.iqn,
        "tpgt": 1,
        "portals": [{"ip": LOOPBACK, "port": port}],
        "luns": [{"lun": lun.lun, "storage_object": lun.storage_name} for lun in spec.luns],
        "demo_mode": demo_mode,
        "chap": spec.chap.as_config() if spec.chap else None,
        "acls": [
            {"initiator": acl.initiator, "chap": acl.chap.as_config() if acl.chap else None}
            for acl in spec.acls
        ],
    }
    config: dict[str, Any] = {
        "schema_version": 1,
        "frontend": "native",
        "state_dir": str(directory / "state"),
        "log_level": spec.log_level,
        "storage_objects": storage_objects,
        "targets": [target],
    }
    config.update(spec.extra_config)
    return config


class DaemonProcess:
    """One odxtarget daemon under test. Always call :meth:`stop` (the fixtures do)."""

    def __init__(self, spec: DaemonSpec, directory: Path, port: int | None = None) -> None:
        self.spec = spec
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self.config_path = directory / "odxtarget.json"
        self.log_path = directory / "odxtarget.log"
        self.config = build_config(spec, directory, self.port)
        self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")
        for storage in self.config["storage_objects"]:
            image = Path(storage["extents"][0]["path"])
            if not image.exists():
                with image.open("wb") as handle:
                    handle.truncate(storage["size"])
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- addresses ------------------------------------------------------------------------

    @property
    def iqn(self) -> str:
        return self.spec.iqn

    def url(self, lun: int = 0, *, user: str | None = None, password: str | None = None) -> str:
        """An iscsi:// URL for libiscsi tools (iscsi-test-cu, iscsi-perf, iscsi-inq)."""
        credentials = ""
        if user is not None:
            credentials = user + (f"%{password}" if password is not None else "") + "@"
        return f"iscsi://{credentials}{self.host}:{self.port}/{self.iqn}/{lun}"

    def lun_spec(self, lun: int) -> LunSpec:
        return next(spec for spec in self.spec.luns if spec.lun == lun)

    def image_path(self, lun: int) -> Path:
        return self.directory / f"{self.lun_spec(lun).storage_name}.img"

    # -- lifecycle ------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [sys.executable, "-m", "odxtarget", "serve", "--config", str(self.config_path)]

    def start(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> DaemonProcess:
        if self.running:
            raise RuntimeError("daemon already running")
        self.starts += 1
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")])
        )
        environment["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            log.write(f"===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.directory,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,   # our signals must not reach pytest, nor Ctrl-C theirs
            )
        self._wait_until_listening(timeout)
        return self

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise DaemonStartError(
                    f"odxtarget exited with status {self.process.returncode} before listening on "
                    f"{self.host}:{self.port}\n--- log ---\n{self.log_text()}"
                )
            if port_accepts(self.host, self.port):
                return
            time.sleep(0.05)
        self.kill()
        raise DaemonStartError(
            f"odxtarget did not listen on {self.host}:{self.port} within {timeout:.0f} s"
            f"\n--- log ---\n{self.log_text()}"
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def kill(self) -> None:
        """SIGKILL: the daemon gets no chance to flush anything (crash simulation)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM and wait for a clean exit; returns the exit status (SIGKILL after timeout)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def restart(self, *, hard: bool = False, timeout: float = STARTUP_TIMEOUT_SECONDS) -> DaemonProcess:
        """Stop (SIGKILL if ``hard``, else SIGTERM) and start again on the same config and files."""
        if hard:
            self.kill()
        else:
            self.terminate()
        return self.start(timeout)

    def stop(self) -> None:
        """Idempotent teardown: terminate, then kill if needed."""
        if self.running:
            self.terminate()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
