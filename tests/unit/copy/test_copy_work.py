"""The storage contract of copies (odxtarget/storage/copy_work.py, ``storage.backend.FileBacked``):
a copy step holds the leases of the backends whose descriptors it uses, a backend without the
copy capability is copied through its plain calls, and writes reach the copy manager through the
logical unit's change listeners, with no proxy around the backend."""

from __future__ import annotations

import errno
import os

import pytest

from odxtarget.config import ExtentConfig
from odxtarget.copy import CopyManager
from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
from odxtarget.copy.token import make_zero_token
from odxtarget.scsi.execution import complete_inline
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ScsiCommand, Status
from odxtarget.storage import copy_strategies
from odxtarget.storage.backend import FileBacked
from odxtarget.storage.copy_work import BackendEndpoint, CopyStep, Move, Place
from odxtarget.storage.extents import FileExtentBackend
from odxtarget.storage.memory import MemoryBackend
from tests.support.copy_cdbs import pt_cdb, read16, rrti_cdb, write16, wut_cdb
from tests.unit.copy.odx_helpers import MIB, NEXUS, pattern, sense_triplet


@pytest.fixture
def two_files(tmp_path):
    source = FileExtentBackend([ExtentConfig(str(tmp_path / "a.img"))], MIB)
    destination = FileExtentBackend([ExtentConfig(str(tmp_path / "b.img"))], MIB)
    source.write(0, pattern(MIB, 1))
    yield source, destination
    source.close()
    destination.close()


def move_all(source, destination) -> CopyStep:
    return CopyStep((Move(Place(BackendEndpoint(source), 0), Place(BackendEndpoint(destination), 0), MIB),),
                    destination.lane)


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_file_extent_backends_have_the_copy_capability_and_memory_does_not():
    assert isinstance(FileExtentBackend.__new__(FileExtentBackend), FileBacked)
    assert not isinstance(MemoryBackend(4096), FileBacked)


def test_a_copy_step_keeps_both_backends_files_open_until_it_ends(two_files, monkeypatch, tmp_path):
    source, destination = two_files
    descriptors = (source.extents_for(0, 1)[0].fd, destination.extents_for(0, 1)[0].fd)
    original = copy_strategies.copy_range

    def replaced_mid_step(*args):
        source.close()                  # an administrator replaces both storage objects
        destination.close()
        assert not any(closed(fd) for fd in descriptors)
        return original(*args)

    monkeypatch.setattr(copy_strategies, "copy_range", replaced_mid_step)
    outcome = move_all(source, destination).run()
    assert outcome.error is None and outcome.completed == MIB
    assert all(closed(fd) for fd in descriptors)            # the step's leases were the last
    assert (tmp_path / "b.img").read_bytes() == pattern(MIB, 1)


def test_a_step_that_starts_after_the_storage_was_replaced_uses_no_descriptor(two_files, monkeypatch):
    source, destination = two_files
    destination.close()
    monkeypatch.setattr(copy_strategies, "copy_range", lambda *args: pytest.fail("a descriptor was used"))
    outcome = move_all(source, destination).run()
    assert outcome.error is not None and outcome.error.errno == errno.EBADF
    assert (outcome.completed, outcome.moved) == (0, {})


class MemoryUnits:
    """Logical units over MemoryBackend (no copy capability) and a copy manager without ROD
    files: copies go through read_into/write, tokens are all cancel-on-write."""

    def __init__(self) -> None:
        self.manager = CopyManager(None)
        self.target = ScsiTarget("iqn.2026-01.org.test:memory", {})
        self.luns = {}
        for lun in (0, 1):
            lu = LogicalUnit(LogicalUnitConfig(name=f"memory{lun}", backend=MemoryBackend(4 * MIB)))
            self.manager.attach(lu)
            self.target.add_lun(lun, lu)
            self.luns[lun] = lu
            self.run(bytes(6), lun=lun)

    def run(self, cdb: bytes, data: bytes = b"", lun: int = 0):
        return complete_inline(self.target.execute(ScsiCommand(cdb=cdb, nexus=NEXUS, lun=lun, data_out=data,
                                                               expected_transfer_length=len(data))))

    def token(self, ranges) -> bytes:
        data = build_populate_token_list(ranges)
        assert self.run(pt_cdb(1, len(data)), data).status == Status.GOOD
        return bytes(self.run(rrti_cdb(1)).data_in)[38:550]

    def write_using(self, token: bytes, ranges, lun: int = 1, list_id: int = 2):
        data = build_write_using_token_list(token, ranges)
        return self.run(wut_cdb(list_id, len(data)), data, lun)


def test_backends_without_the_copy_capability_are_copied_by_read_and_write():
    units = MemoryUnits()
    data = pattern(64 * 512, 2)
    assert units.run(write16(0, 64), data).status == Status.GOOD
    token = units.token([(0, 64)])
    assert units.write_using(token, [(100, 64)]).status == Status.GOOD
    assert bytes(units.run(read16(100, 64), lun=1).data_in) == data
    assert units.manager.counters("memory1")["bytes"] == {"read_write": 64 * 512}
    assert units.write_using(make_zero_token(), [(100, 8)], list_id=3).status == Status.GOOD
    assert bytes(units.run(read16(100, 8), lun=1).data_in) == bytes(8 * 512)
    units.manager.close()


def test_writes_reach_the_copy_manager_through_the_change_listeners():
    units = MemoryUnits()
    lu = units.luns[0]
    assert isinstance(lu.backend, MemoryBackend)                  # no proxy around the backend
    assert units.manager.copies.lu_changing in lu.change_listeners
    token = units.token([(0, 64)])
    assert units.run(write16(63, 1), bytes(512)).status == Status.GOOD
    assert sense_triplet(units.write_using(token, [(100, 8)])) == (0x5, 0x23, 0x08)
    units.manager.detach(lu)
    assert units.manager.copies.lu_changing not in lu.change_listeners
    units.manager.close()
