"""Helpers for the copy manager tests: LUs over real files, CDB builders, an injectable clock,
a synchronous stand-in for the storage workers, and the XFS reflink loop mount."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import tempfile
from collections import deque
from dataclasses import dataclass, field

from odxtarget.scsi.execution import complete_inline
from odxtarget.config import ExtentConfig
from odxtarget.copy import CopyLimits, CopyManager
from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ItNexus, ScsiCommand, Status
from odxtarget.storage.extents import FileExtentBackend
from tests.support.copy_cdbs import pt_cdb, read16, rrti_cdb, write16, wut_cdb

NEXUS = ItNexus("iqn.2026-01.org.test:init,i,0x800000000001", "iqn.2026-01.org.test:tgt,t,0x1")
OTHER_NEXUS = ItNexus("iqn.2026-01.org.test:other,i,0x800000000002", "iqn.2026-01.org.test:tgt,t,0x1")
MIB = 1 << 20


class FakeClock:
    """Monotonic seconds that only move when told to (or by ``tick`` per call)."""

    def __init__(self, start: float = 1000.0, tick: float = 0.0):
        self.now = start
        self.tick = tick

    def __call__(self) -> float:
        value = self.now
        self.now += self.tick
        return value

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InlineWorkers:
    """A synchronous stand-in for ``transport.workers.StorageWorkers``: work runs as soon as it
    is submitted (on the test's thread), and its completion when the test says so (``run_one``,
    ``run_all``), as the event loop would run it later. So a test sees a background copy move
    one step at a time."""

    def __init__(self) -> None:
        self._completions: deque = deque()
        self.submitted = 0

    def submit(self, work, completion) -> None:
        self.submitted += 1
        try:
            value, error = work.run(), None
        except Exception as exc:  # noqa: BLE001 - handed to the completion, as the workers do
            value, error = None, exc
        self._completions.append((completion, value, error))

    @property
    def pending(self) -> int:
        return len(self._completions)

    def run_one(self) -> bool:
        """Deliver the oldest completion; False when there was none."""
        if not self._completions:
            return False
        completion, value, error = self._completions.popleft()
        completion(value, error)
        return True

    def run_all(self, limit: int = 1_000_000) -> int:
        """Deliver completions (and those of the work they submit) until none is left."""
        count = 0
        while count < limit and self.run_one():
            count += 1
        return count


def pattern(length: int, seed: int) -> bytes:
    """Distinct data per seed and per 512-byte block (a block number is stamped in)."""
    out = bytearray()
    block = 0
    while len(out) < length:
        out += struct.pack(">IQ", seed, block) + bytes((seed * 31 + block + i) & 0xFF for i in range(500))
        block += 1
    return bytes(out[:length])


def sense_triplet(result) -> tuple[int, int, int]:
    sense = result.sense
    return sense[2] & 0x0F, sense[12], sense[13]


def information(result) -> int:
    assert result.sense[0] & 0x80, "VALID bit not set"
    return struct.unpack_from(">I", result.sense, 3)[0]


@dataclass
class Env:
    """A target with LUs over files in ``directory`` and one copy manager for all of them."""

    directory: str
    clock: FakeClock = field(default_factory=FakeClock)
    limits: CopyLimits = field(default_factory=CopyLimits)
    state_dir: str | None = None

    def __post_init__(self) -> None:
        self.state_dir = self.state_dir or os.path.join(self.directory, "state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.workers = InlineWorkers()
        self.manager = CopyManager(self.state_dir, self.limits, clock=self.clock, workers=self.workers)
        self.manager.startup_cleanup()
        self.target = ScsiTarget("iqn.2026-01.org.test:tgt", {})
        self.luns: dict[int, LogicalUnit] = {}
        self.backends = []

    def add_lu(self, lun: int, size: int = 8 * MIB, block_size: int = 512, name: str | None = None,
               extents: list[ExtentConfig] | None = None) -> LogicalUnit:
        name = name or f"lu{lun}"
        backend = FileExtentBackend(extents or [ExtentConfig(os.path.join(self.directory, f"{name}.img"))], size)
        self.backends.append(backend)
        lu = LogicalUnit(LogicalUnitConfig(name=name, backend=backend, block_size=block_size))
        self.manager.attach(lu)
        self.target.add_lun(lun, lu)
        self.luns[lun] = lu
        for nexus in (NEXUS, OTHER_NEXUS):
            self.run(bytes(6), lun=lun, nexus=nexus)  # TEST UNIT READY clears the power-on UA
        return lu

    def run(self, cdb: bytes, data: bytes = b"", lun: int = 0, nexus: ItNexus = NEXUS):
        return complete_inline(self.target.execute(ScsiCommand(cdb=cdb, nexus=nexus, lun=lun, data_out=data,
                                               expected_transfer_length=len(data))))

    def ok(self, cdb: bytes, data: bytes = b"", lun: int = 0, nexus: ItNexus = NEXUS):
        result = self.run(cdb, data, lun, nexus)
        assert result.status == Status.GOOD, (cdb.hex(), result.sense.hex())
        return result

    def write(self, lun: int, lba: int, data: bytes) -> None:
        block_size = self.luns[lun].block_size
        self.ok(write16(lba, len(data) // block_size), data, lun)

    def read(self, lun: int, lba: int, blocks: int) -> bytes:
        return bytes(self.ok(read16(lba, blocks), lun=lun).data_in)

    def populate(self, lun: int, ranges, list_id: int = 1, nexus: ItNexus = NEXUS, **options):
        data = build_populate_token_list(ranges, **options)
        return self.run(pt_cdb(list_id, len(data)), data, lun, nexus)

    def token(self, lun: int, ranges, list_id: int = 1, nexus: ItNexus = NEXUS, **options) -> bytes:
        result = self.populate(lun, ranges, list_id, nexus, **options)
        assert result.status == Status.GOOD, result.sense.hex()
        info = bytes(self.ok(rrti_cdb(list_id), lun=lun, nexus=nexus).data_in)
        assert len(info) == 550, len(info)
        return info[38:550]

    def write_using(self, lun: int, token: bytes, ranges, list_id: int = 2, nexus: ItNexus = NEXUS, **options):
        data = build_write_using_token_list(token, ranges, **options)
        return self.run(wut_cdb(list_id, len(data)), data, lun, nexus)

    def settle(self) -> int:
        """Run background copies and the storage work nobody waits for to their end."""
        return self.workers.run_all()

    def close(self) -> None:
        self.manager.close()
        for backend in self.backends:
            backend.close()


@contextlib.contextmanager
def xfs_reflink_mount(size: str = "1G"):
    """Yield a directory on a fresh loop-mounted XFS with reflink=1; raise OSError if impossible."""
    base = tempfile.mkdtemp(prefix="odx-xfs-")
    image = os.path.join(base, "xfs.img")
    mountpoint = os.path.join(base, "mnt")
    os.mkdir(mountpoint)
    mounted = False
    try:
        if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
            raise OSError("need root and mkfs.xfs for the XFS reflink mount")
        subprocess.run(["truncate", "-s", size, image], check=True, capture_output=True)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", image], check=True, capture_output=True)
        result = subprocess.run(["mount", "-o", "loop", image, mountpoint], capture_output=True, text=True)
        if result.returncode:
            raise OSError(f"mount failed: {result.stderr.strip()}")
        mounted = True
        yield mountpoint
    except subprocess.CalledProcessError as error:
        raise OSError(f"{error.cmd}: {error.stderr!r}") from None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", mountpoint], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def xfs_unavailable_is_fatal() -> bool:
    return os.environ.get("CI", "").lower() == "true"
