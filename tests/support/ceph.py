"""A one-node Ceph cluster in userspace, for the RBD tests, ``make run-cluster`` and the bench.

One monitor and one OSD on a memory store (``osd objectstore = memstore``), authentication
off, pools of size 1, everything under one directory and on 127.0.0.1: from Debian's
``ceph-mon``/``ceph-osd`` packages it comes up in a few seconds and needs no disk and no
kernel module (docs/rbd.md, "A cluster to try it on"). The daemons run in the foreground as
children of this process, so stopping them never depends on pid files.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.daemon import LOOPBACK, free_port

#: Debian packages the cluster and the RBD storage objects need (scripts/setup installs them).
CEPH_COMMANDS = ("ceph-mon", "ceph-osd", "monmaptool", "ceph", "rbd")
STARTUP_TIMEOUT_SECONDS = 60.0
POOL = "rbd"
#: Memory the OSD's store may hold: every image byte written lives in the OSD's memory.
MEMSTORE_BYTES = 8 << 30


def ceph_problem() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [command for command in CEPH_COMMANDS if shutil.which(command) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian packages ceph-mon ceph-osd ceph-common)"
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError as error:
        return f"the Ceph Python bindings do not import ({error}); run scripts/setup"
    return None


class CephCluster:
    """One monitor, one memstore OSD and the pool ``rbd``, under ``directory``."""

    def __init__(self, directory: Path, mon_port: int | None = None) -> None:
        self.directory = directory.resolve()
        self.mon_port = mon_port or free_port()
        self.fsid = str(uuid.uuid4())
        self.conf_path = self.directory / "ceph.conf"
        self._processes: list[subprocess.Popen[bytes]] = []

    def _write_conf(self) -> None:
        d = self.directory
        self.conf_path.write_text(
            "[global]\n"
            f"fsid = {self.fsid}\n"
            f"mon host = {LOOPBACK}:{self.mon_port}\n"
            "mon initial members = a\n"
            "auth cluster required = none\n"
            "auth service required = none\n"
            "auth client required = none\n"
            "osd objectstore = memstore\n"
            f"memstore device bytes = {MEMSTORE_BYTES}\n"
            "osd pool default size = 1\n"
            "osd pool default min size = 1\n"
            "mon allow pool size one = true\n"
            "mon allow pool delete = true\n"
            "mon warn on pool no redundancy = false\n"
            "osd crush chooseleaf type = 0\n"
            "ms bind ipv6 = false\n"
            f"public addr = {LOOPBACK}\n"
            f"run dir = {d}/run\n"
            f"log file = {d}/log/$name.log\n"
            f"admin socket = {d}/run/$name.asok\n"
            f"mon data = {d}/mon/$cluster-$id\n"
            f"osd data = {d}/osd/$cluster-$id\n"
            "mon data avail crit = 1\n"
            "mon data avail warn = 2\n"
            # memstore keeps object names in memory; the OSD's own check is for filestore.
            "osd max object name len = 256\n"
            "osd max object namespace len = 64\n"
            "[client]\n"
            "rbd cache = false\n"
        )

    def _run(self, *command: str, timeout: float = 30.0) -> str:
        completed = subprocess.run([*command], capture_output=True, text=True, timeout=timeout)
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}): "
                               f"{(completed.stderr or completed.stdout).strip()[-500:]}")
        return completed.stdout

    def ceph(self, *arguments: str, timeout: float = 30.0) -> str:
        """Run the ``ceph`` tool against this cluster."""
        return self._run("ceph", "-c", str(self.conf_path), *arguments, timeout=timeout)

    def rbd(self, *arguments: str, timeout: float = 30.0) -> str:
        """Run the ``rbd`` tool against this cluster."""
        return self._run("rbd", "-c", str(self.conf_path), *arguments, timeout=timeout)

    def _spawn(self, *command: str) -> None:
        log = open(self.directory / "log" / f"{Path(command[0]).name}.out", "ab")
        with log:
            self._processes.append(subprocess.Popen([*command], stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, start_new_session=True))

    def start(self) -> "CephCluster":
        """Create and start the cluster, and the pool ``rbd``; raises RuntimeError if it fails."""
        problem = ceph_problem()
        if problem is not None:
            raise RuntimeError(problem)
        for sub in ("run", "log", "mon", "osd/ceph-0"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self._write_conf()
        conf = str(self.conf_path)
        monmap = str(self.directory / "monmap")
        try:
            self._run("monmaptool", "--create", "--add", "a", f"{LOOPBACK}:{self.mon_port}",
                      "--fsid", self.fsid, "-c", conf, monmap)
            self._run("ceph-mon", "-c", conf, "--mkfs", "-i", "a", "--monmap", monmap)
            self._spawn("ceph-mon", "-c", conf, "-i", "a", "-f")
            osd_uuid = str(uuid.uuid4())
            self.ceph("osd", "create", osd_uuid, timeout=STARTUP_TIMEOUT_SECONDS)
            self._run("ceph-osd", "-c", conf, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
            self._spawn("ceph-osd", "-c", conf, "-i", "0", "-f")
            self._wait_for_osd()
            self.ceph("osd", "pool", "create", POOL, "8")
            self.rbd("pool", "init", POOL, timeout=STARTUP_TIMEOUT_SECONDS)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_osd(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            for process in self._processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited with status {process.returncode}; "
                                       f"see {self.directory / 'log'}")
            if '"num_up_osds":1' in self.ceph("osd", "stat", "--format", "json").replace(" ", ""):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the OSD did not come up within {STARTUP_TIMEOUT_SECONDS:.0f} s")

    def create_image(self, name: str, size: int) -> str:
        """An image of ``size`` bytes in the pool (layering only: every gateway writes it
        without an exclusive lock moving between them); returns its name."""
        self.rbd("create", "--size", f"{size}B", "--image-feature", "layering", f"{POOL}/{name}")
        return name

    def stop(self) -> None:
        """Stop the daemons (OSD first) and wait for them."""
        for process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self._processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes.clear()

    @contextmanager
    def paused(self, daemon: str) -> Iterator[None]:
        """Freeze ``daemon`` ("ceph-mon" or "ceph-osd") with SIGSTOP for the block: its
        connections stay open and nothing answers on them, like a hung daemon."""
        process = next(process for process in self._processes if Path(process.args[0]).name == daemon)
        process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            process.send_signal(signal.SIGCONT)

    def __enter__(self) -> "CephCluster":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
