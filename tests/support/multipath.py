"""A small multipath initiator on libiscsi: one block device over several iSCSI paths, the way
Linux dm-multipath drives an all-active/optimized ALUA target (docs/cluster.md).

It is not dm-multipath; it does on the host what dm-multipath does in a kernel, so a test can
check what the target must give failover:

* Path grouping (multipathd's ``path_grouping_policy group_by_prio`` with the ``alua``
  prioritizer): every path must report the same logical unit name (VPD 83h, association 0)
  and the target port group it is reached through must be active/optimized in REPORT TARGET
  PORT GROUPS, so all paths land in one group.
* Round robin (``path_selector "round-robin 0"``): commands alternate over the usable paths.
* Failover (``no_path_retry queue``): a command whose path fails at the transport (the
  connection drops, the command times out) is not completed to the application; the path is
  failed and the command is sent again on the next usable path. A SCSI status from the
  target is final and goes to the application, like dm-multipath passes target errors up.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from tests.support import libiscsi

log = logging.getLogger(__name__)

RTPG_CDB = bytes((0xA3, 0x0A, 0, 0, 0, 0)) + (1024).to_bytes(4, "big") + bytes(2)
ACTIVE_OPTIMIZED = 0x0


class NoUsablePath(RuntimeError):
    """Every path failed."""


@dataclass(slots=True)
class Path:
    """One I_T nexus to the LU: a portal, its session, and whether it is usable."""

    host: str
    port: int
    session: libiscsi.IscsiSession | None = None
    failed: bool = False
    target_port_group: int = 0


def logical_unit_names(page: bytes) -> list[bytes]:
    """Designators of the logical unit itself (association 0) in VPD page 83h."""
    names, offset, end = [], 4, 4 + int.from_bytes(page[2:4], "big")
    while offset + 4 <= min(end, len(page)):
        kind, length = page[offset + 1], page[offset + 3]
        if (kind >> 4) & 0x03 == 0:
            names.append(page[offset:offset + 4 + length])
        offset += 4 + length
    return names


def target_port_group(page: bytes) -> int:
    """The TARGET PORT GROUP designator (type 5, association 1) of VPD page 83h."""
    offset, end = 4, 4 + int.from_bytes(page[2:4], "big")
    while offset + 4 <= min(end, len(page)):
        kind, length = page[offset + 1], page[offset + 3]
        if (kind >> 4) & 0x03 == 1 and kind & 0x0F == 5:
            return int.from_bytes(page[offset + 6:offset + 8], "big")
        offset += 4 + length
    raise ValueError("no target port group designator in VPD page 83h")


def group_states(report: bytes) -> dict[int, int]:
    """Asymmetric access state of each target port group in REPORT TARGET PORT GROUPS data."""
    states, offset, end = {}, 4, 4 + int.from_bytes(report[:4], "big")
    while offset + 8 <= min(end, len(report)):
        ports = report[offset + 7]
        states[int.from_bytes(report[offset + 2:offset + 4], "big")] = report[offset] & 0x0F
        offset += 8 + 4 * ports
    return states


@dataclass
class MultipathDevice:
    """One LU over ``paths``; ``command`` is the application's block layer entry point."""

    target_iqn: str
    paths: list[Path]
    lun: int = 0
    timeout_seconds: int = 10
    failovers: int = 0
    #: Every result a path returned that was not GOOD (what dm-multipath would pass up).
    errors: list[str] = field(default_factory=list)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self) -> MultipathDevice:
        """Log in on every path and group them as multipathd would; raises ValueError when the
        paths do not lead to one LU with every group active/optimized."""
        names = set()
        for path in self.paths:
            path.session = libiscsi.connect(path.host, path.port, self.target_iqn, lun=self.lun,
                                            timeout_seconds=self.timeout_seconds)
            page = path.session.checked("INQUIRY VPD 83h", self.lun, bytes((0x12, 1, 0x83, 4, 0, 0)),
                                        data_in_len=1024).data
            names.add(tuple(logical_unit_names(page)))
            path.target_port_group = target_port_group(page)
            states = group_states(path.session.checked("REPORT TARGET PORT GROUPS", self.lun, RTPG_CDB,
                                                       data_in_len=1024).data)
            if states.get(path.target_port_group) != ACTIVE_OPTIMIZED:
                raise ValueError(f"path {path.host}:{path.port}: group {path.target_port_group} is not"
                                 f" active/optimized: {states}")
        if len(names) != 1 or not next(iter(names)):
            raise ValueError(f"the paths lead to different logical units: {names}")
        return self

    def command(self, cdb: bytes, data_out: bytes | None = None, data_in_len: int = 0) -> libiscsi.Result:
        """Send ``cdb`` on the next usable path, failing over until some path answers."""
        while True:
            path = self._choose()
            assert path.session is not None
            try:
                result = path.session.scsi_command(self.lun, cdb, data_out=data_out, data_in_len=data_in_len)
            except libiscsi.ConnectionLostError as error:
                self._fail(path, str(error))
                continue
            if not result.acknowledged:
                self._fail(path, f"status {result.status:#x}")
                continue
            if not result.good:
                self.errors.append(f"{path.host}:{path.port}: {result.describe()}")
            return result

    def _choose(self) -> Path:
        with self._lock:
            usable = [path for path in self.paths if not path.failed]
            if not usable:
                raise NoUsablePath(f"all {len(self.paths)} paths failed")
            self._next = (self._next + 1) % len(usable)
            return usable[self._next]

    def _fail(self, path: Path, why: str) -> None:
        with self._lock:
            if path.failed:
                return
            path.failed = True
            self.failovers += 1
        log.info("path %s:%d failed (%s); failing over", path.host, path.port, why)
        if path.session is not None:
            path.session.abandon()

    def close(self) -> None:
        for path in self.paths:
            if path.session is not None:
                if path.failed:
                    continue
                path.session.close()
