"""Storage failures in the copy path: the LU's own write error (not a short transfer count, not
a fixed MEDIUM ERROR), staging that cleans up after itself, and storage swapped under copies."""

from __future__ import annotations

import errno
import os
import struct

import pytest

from odxtarget.copy.job import live_source, overlaps_for, set_aside
from odxtarget.copy.limits import CopyLimits
from odxtarget.copy.token import creator_descriptor
from odxtarget.copy.xcopy import build_extended_copy
from odxtarget.scsi.types import Status
from odxtarget.storage import copy_strategies, copy_work
from tests.support.copy_cdbs import rrti_cdb, xcopy_cdb
from tests.unit.copy.odx_helpers import MIB, information, pattern, sense_triplet

ILLEGAL, MEDIUM, DATA_PROTECT, COPY_ABORTED = 0x5, 0x3, 0x7, 0xA


def failing(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rrti(env, list_id: int, lun: int = 0) -> bytes:
    return bytes(env.ok(rrti_cdb(list_id), lun=lun).data_in)


# -- flush and storage errors --------------------------------------------------------------------

def test_flush_failure_after_write_using_token_is_the_lus_write_error(ext4_env, monkeypatch):
    env = ext4_env
    lu = env.add_lu(0)
    env.write(0, 0, pattern(64 * 512, 1))
    token = env.token(0, [(0, 64)])
    lu.mode.write_cache = False
    monkeypatch.setattr(lu.backend, "flush", failing(errno.EIO))
    result = env.write_using(0, token, [(1000, 64)], list_id=7)
    monkeypatch.undo()
    assert result.status == Status.CHECK_CONDITION
    assert sense_triplet(result) == (MEDIUM, 0x0C, 0x00)          # not COPY ABORTED 0Dh/04h, 64 blocks
    info = rrti(env, 7)
    assert info[5] == 0x02 and struct.unpack_from(">Q", info, 16)[0] == 0
    assert info[32 + 2] & 0x0F == MEDIUM


def test_a_copy_failing_for_lack_of_space_reports_it_as_writes_do(ext4_env, monkeypatch):
    env = ext4_env
    env.add_lu(0)
    token = env.token(0, [(0, 64)])
    monkeypatch.setattr(copy_work._StepRun, "_move", failing(errno.ENOSPC))
    result = env.write_using(0, token, [(1000, 64)], list_id=7)
    monkeypatch.undo()
    assert sense_triplet(result) == (DATA_PROTECT, 0x27, 0x07)
    assert information(result) == 1000
    assert rrti(env, 7)[5] == 0x02


def test_extended_copy_carries_the_destinations_write_error(ext4_env, monkeypatch):
    env = ext4_env
    lu = env.add_lu(0)
    descriptor = creator_descriptor(lu.naa_designator, lu.block_size)
    data = build_extended_copy(1, [descriptor], [(0, 0, 8, 0, 4096)])
    monkeypatch.setattr(copy_work._StepRun, "_move", failing(errno.ENOSPC))
    result = env.run(xcopy_cdb(len(data)), data)
    monkeypatch.undo()
    assert sense_triplet(result) == (COPY_ABORTED, 0x00, 0x00)
    target_sense = result.sense[18:]
    assert (target_sense[2] & 0x0F, target_sense[12], target_sense[13]) == (DATA_PROTECT, 0x27, 0x07)


def test_extended_copy_flush_failure_is_an_error(ext4_env, monkeypatch):
    env = ext4_env
    lu = env.add_lu(0)
    lu.mode.write_cache = False
    descriptor = creator_descriptor(lu.naa_designator, lu.block_size)
    data = build_extended_copy(1, [descriptor], [(0, 0, 8, 0, 4096)])
    monkeypatch.setattr(lu.backend, "flush", failing(errno.EIO))
    result = env.run(xcopy_cdb(len(data)), data)
    monkeypatch.undo()
    assert sense_triplet(result) == (COPY_ABORTED, 0x00, 0x00)
    target_sense = result.sense[18:]
    assert (target_sense[2] & 0x0F, target_sense[12], target_sense[13]) == (MEDIUM, 0x0C, 0x00)


# -- staging overlapping sources -------------------------------------------------------------------

def test_only_the_source_data_the_copy_overwrites_is_staged(ext4_env):
    env = ext4_env
    lu = env.add_lu(0)
    other = env.add_lu(1)
    source = live_source(lu.backend, [(0, 64), (128, 64), (300, 8)], 512)
    assert overlaps_for(source, lu.backend, [(32, 16), (302, 1)], 512).run() == (0, 2)
    assert overlaps_for(source, other.backend, [(0, 512)], 512).run() == ()


def test_staging_copies_aside_in_steps(ext4_env):
    env = ext4_env
    lu = env.add_lu(0)
    data = pattern(256 * 512, 5)
    env.write(0, 0, data)
    source = live_source(lu.backend, [(0, 64), (128, 64)], 512)
    staging = copy_work.StagingFile.create(env.manager.rod_directory.path)
    try:
        job, staged = set_aside(source, (1,), staging, 512, lu.backend.lane)
        steps = 0
        while not job.done:
            step = job.next_step(8 * 512)
            job.advanced(step, step.run())
            steps += 1
        assert job.finished_all and steps == 8
        assert staged[0] is source[0] and staged[1].place.endpoint is staging
        copy = bytearray(64 * 512)
        staging.read(0, memoryview(copy))
        assert bytes(copy) == data[128 * 512:192 * 512]
    finally:
        staging.release()


def test_write_using_token_whose_staging_fails_frees_the_list_id(ext4_env, monkeypatch):
    env = ext4_env
    env.add_lu(0)
    data = pattern(64 * 512, 3)
    env.write(0, 0, data)
    token = env.token(0, [(0, 64)])                 # live: the destination overlaps its source
    before = open_fds()
    monkeypatch.setattr(copy_strategies, "copy_range", failing(errno.ENOSPC))    # writing the staging file
    result = env.write_using(0, token, [(32, 64)], list_id=7)
    monkeypatch.undo()
    assert sense_triplet(result) == (DATA_PROTECT, 0x27, 0x07)
    assert open_fds() == before
    assert rrti(env, 7)[5] == 0x02                  # completed with errors, not still running
    assert env.write_using(0, token, [(32, 64)], list_id=7).status == Status.GOOD
    assert env.read(0, 32, 64) == data


# -- storage swapped under copies ----------------------------------------------------------------

def background(env, destination_lun: int, list_id: int = 7) -> bytes:
    env.manager.limits = CopyLimits(background_step_bytes=64 * 1024)
    token = env.token(0, [(0, 8192)], list_id=1)
    assert env.write_using(destination_lun, token, [(8192, 8192)], list_id=list_id, immed=True).status == Status.GOOD
    env.workers.run_one()
    assert env.manager.has_pending_work()
    return token


@pytest.fixture
def two_lus(ext4_env):
    ext4_env.add_lu(0, size=16 * MIB)
    ext4_env.add_lu(1, size=16 * MIB)
    ext4_env.add_lu(2, size=16 * MIB)
    ext4_env.write(0, 0, pattern(MIB, 4))
    return ext4_env


@pytest.mark.parametrize("replaced", [0, 1])
def test_storage_replacing_terminates_copies_reading_or_writing_the_lu(two_lus, replaced):
    env = two_lus
    token = background(env, destination_lun=1)
    submitted = env.workers.submitted
    env.manager.storage_replacing(env.luns[replaced])
    env.settle()                                    # the step that was on a worker returns
    assert env.workers.submitted == submitted       # and no step starts after it
    assert not env.manager.has_pending_work()
    info = rrti(env, 7, lun=1)
    assert info[5] == 0x60 and info[12] == 0x40
    if replaced == 0:                               # the live token named the storage that goes
        assert sense_triplet(env.write_using(2, token, [(0, 8)], list_id=8)) == (ILLEGAL, 0x23, 0x08)


def test_storage_replacing_leaves_other_copies_running(two_lus):
    env = two_lus
    token = background(env, destination_lun=1)
    env.manager.storage_replacing(env.luns[2])
    assert env.manager.has_pending_work()
    env.settle()
    assert rrti(env, 7, lun=1)[5] == 0x01
    assert env.write_using(2, token, [(0, 8)], list_id=8).status == Status.GOOD


def test_detaching_the_source_of_a_background_copy_terminates_it(two_lus):
    env = two_lus
    background(env, destination_lun=1)
    env.manager.detach(env.luns[0])
    env.settle()
    assert not env.manager.has_pending_work()
    assert rrti(env, 7, lun=1)[5] == 0x60


def test_snapshot_tokens_survive_storage_replacing(xfs_env):
    env = xfs_env
    env.add_lu(0)
    data = pattern(64 * 512, 9)
    env.write(0, 0, data)
    token = env.token(0, [(0, 64)])
    assert struct.unpack_from(">I", token, 0)[0] == 0x00800000
    env.manager.storage_replacing(env.luns[0])
    env.write(0, 0, bytes(64 * 512))
    assert env.write_using(0, token, [(1000, 64)]).status == Status.GOOD
    assert env.read(0, 1000, 64) == data
