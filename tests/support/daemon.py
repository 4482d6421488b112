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
MAIN_PORTAL = "main"     # the portal name of DaemonProcess.port
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
    #: Store the LUN in an RBD image instead of a file: the storage object's "rbd" section
    #: (docs/rbd.md), e.g. {"image": "lun0", "conf": str(cluster.conf_path)}.
    rbd: dict[str, Any] | None = None
    #: Store the LUN on a block device instead of a file: its path (docs/block.md), e.g. a
    #: loop device of tests/support/loop.py. ``size`` may be at most the device's.
    block: str | None = None

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
    #: The ACL's "mapped_luns" (LUN masking), e.g. [{"mapped_lun": 0, "lun": 1}]; None: every LUN.
    mapped_luns: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class TargetSpec:
    """One more target of the same daemon.

    ``portals`` names the portals it listens on: ``MAIN_PORTAL`` is the daemon's own port
    (``DaemonProcess.port``); every other name gets a free loopback port of its own, shared by
    all targets that use the same name (``DaemonProcess.ports``). LUN storage names must be
    unique across the daemon (set ``LunSpec.name``).
    """

    iqn: str
    luns: list[LunSpec] = field(default_factory=list)
    portals: list[str] = field(default_factory=lambda: [MAIN_PORTAL])
    tpgt: int = 1
    chap: ChapSpec | None = None
    acls: list[AclSpec] = field(default_factory=list)
    demo_mode: bool | None = None    # None: True unless ACLs are given


@dataclass(slots=True)
class DaemonSpec:
    """What the test wants the daemon to serve: one target on one portal, unless
    ``portals`` / ``extra_targets`` ask for more."""

    luns: list[LunSpec] = field(default_factory=lambda: [LunSpec()])
    iqn: str = DEFAULT_IQN
    chap: ChapSpec | None = None
    acls: list[AclSpec] = field(default_factory=list)
    demo_mode: bool | None = None    # None: True unless ACLs are given
    log_level: str = "info"
    extra_config: dict[str, Any] = field(default_factory=dict)  # merged into the top level
    portals: list[str] = field(default_factory=lambda: [MAIN_PORTAL])   # of the main target
    extra_targets: list[TargetSpec] = field(default_factory=list)
    #: The configuration's top-level "iscsi" section (IscsiLimits fields); None leaves it out.
    iscsi: dict[str, Any] | None = None
    #: The main target's TPGT, and the port groups of every gateway serving it (docs/cluster.md).
    tpgt: int = 1
    port_groups: list[int] = field(default_factory=list)

    def portal_names(self) -> list[str]:
        """Every portal name some target listens on, in order of first use."""
        names: list[str] = []
        for portals in [self.portals, *(target.portals for target in self.extra_targets)]:
            names.extend(name for name in portals if name not in names)
        return names


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


def _target_config(iqn: str, tpgt: int, luns: list[LunSpec], portal_ports: list[int], chap: ChapSpec | None,
                   acls: list[AclSpec], demo_mode: bool | None) -> dict[str, Any]:
    return {
        "iqn": iqn,
        "tpgt": tpgt,
        "portals": [{"ip": LOOPBACK, "port": port} for port in portal_ports],
        "luns": [{"lun": lun.lun, "storage_object": lun.storage_name} for lun in luns],
        "demo_mode": demo_mode if demo_mode is not None else not acls,
        "chap": chap.as_config() if chap else None,
        "acls": [
            {"initiator": acl.initiator, "chap": acl.chap.as_config() if acl.chap else None,
             **({"mapped_luns": acl.mapped_luns} if acl.mapped_luns is not None else {})}
            for acl in acls
        ],
    }


def build_config(spec: DaemonSpec, directory: Path, port: int,
                 ports: dict[str, int] | None = None) -> dict[str, Any]:
    """The JSON configuration for ``spec``; storage files live in ``directory``.

    ``ports`` maps portal names to port numbers; the main portal is always ``port``.
    """
    ports = {**(ports or {}), MAIN_PORTAL: port}
    storage_objects = []
    for lun in [*spec.luns, *(lun for target in spec.extra_targets for lun in target.luns)]:
        image = directory / f"{lun.storage_name}.img"
        storage_objects.append({
            "name": lun.storage_name,
            "size": lun.size,
            "block_size": lun.block_size,
            "read_only": lun.read_only,
            **({"physical_block_size": lun.physical_block_size} if lun.physical_block_size else {}),
            **({"removable": True} if lun.removable else {}),
            **({"rbd": lun.rbd} if lun.rbd is not None
               else {"block": {"path": lun.block}} if lun.block is not None
               else {"extents": [{"path": str(image), "offset": 0, "length": None}]}),
        })
    targets = [_target_config(spec.iqn, spec.tpgt, spec.luns, [ports[name] for name in spec.portals], spec.chap,
                              spec.acls, spec.demo_mode)]
    if spec.port_groups:
        targets[0]["port_groups"] = list(spec.port_groups)
    targets += [_target_config(target.iqn, target.tpgt, target.luns, [ports[name] for name in target.portals],
                               target.chap, target.acls, target.demo_mode)
                for target in spec.extra_targets]
    config: dict[str, Any] = {
        "schema_version": 1,
        "frontend": "native",
        "state_dir": str(directory / "state"),
        "log_level": spec.log_level,
        "storage_objects": storage_objects,
        "targets": targets,
    }
    if spec.iscsi is not None:
        config["iscsi"] = dict(spec.iscsi)
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
        #: Port of every portal name of the spec; ``MAIN_PORTAL`` is always ``self.port``.
        self.ports = {MAIN_PORTAL: self.port}
        self.ports.update({name: free_port() for name in spec.portal_names() if name != MAIN_PORTAL})
        self.config_path = directory / "odxtarget.json"
        self.log_path = directory / "odxtarget.log"
        self.config = build_config(spec, directory, self.port, self.ports)
        self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")
        for storage in self.config["storage_objects"]:
            if "extents" not in storage:
                continue
            image = Path(storage["extents"][0]["path"])
            if not image.exists():
                with image.open("wb") as handle:
                    handle.truncate(storage["size"])
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        #: Set in the daemon's environment on top of the test's own (e.g. NOTIFY_SOCKET).
        self.environment: dict[str, str] = {}

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
        self.spawn()
        self._wait_until_listening(timeout)
        return self

    def spawn(self) -> None:
        """Start the process and return at once, without waiting for it to listen."""
        if self.running:
            raise RuntimeError("daemon already running")
        self.starts += 1
        environment = dict(os.environ)
        environment.update(self.environment)
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

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise DaemonStartError(
                    f"odxtarget exited with status {self.process.returncode} before listening on "
                    f"{self.host}:{self.port}\n--- log ---\n{self.log_text()}"
                )
            if all(port_accepts(self.host, self.ports[name]) for name in self.spec.portal_names()):
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
