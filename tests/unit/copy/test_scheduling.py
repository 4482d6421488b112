"""How copies run (docs/odx.md, "How copies run"): their storage work is on workers, so a long
WRITE USING TOKEN stalls no other command; background copies honour max_concurrent_copies;
copies stop between steps (task management, admin storage changes) and report what they did."""

from __future__ import annotations

import asyncio
import os
import struct
import time

from odxtarget.copy import CopyLimits, CopyManager
from odxtarget.copy.params import build_write_using_token_list
from odxtarget.scsi.execution import AbortOutcome, Pending, complete_inline
from odxtarget.scsi.types import ScsiCommand, Status
from odxtarget.storage import copy_strategies
from odxtarget.transport.workers import CommandDriver, StorageWorkers
from tests.support.copy_cdbs import coa_cdb, read16, rrti_cdb, wut_cdb
from tests.unit.copy.odx_helpers import MIB, NEXUS, InlineWorkers, pattern, sense_triplet

SLOW_STEP_SECONDS = 0.5


def rrti(env, list_id: int, lun: int = 0) -> tuple[int, int]:
    """(COPY OPERATION STATUS, TRANSFER COUNT) of a list identifier."""
    info = bytes(env.ok(rrti_cdb(list_id), lun=lun).data_in)
    return info[5], struct.unpack_from(">Q", info, 16)[0]


def command(lun: int, cdb: bytes, data: bytes = b"") -> ScsiCommand:
    return ScsiCommand(cdb=cdb, nexus=NEXUS, lun=lun, data_out=data, expected_transfer_length=len(data))


def test_a_long_write_using_token_does_not_stall_another_session(ext4_env, monkeypatch):
    """Each copy step takes 0.5 s on a worker; a READ of another LU sent while the copy runs
    completes at once, and the event loop keeps its timers."""
    env = ext4_env
    for lun in (0, 1, 2):
        env.add_lu(lun, size=32 * MIB)
    data = os.urandom(16 * MIB)
    env.write(0, 0, data)
    env.write(2, 0, data[:MIB])
    token = env.token(0, [(0, 16 * MIB // 512)])
    original = copy_strategies.copy_range

    def slow_copy_range(*args):
        time.sleep(SLOW_STEP_SECONDS)
        return original(*args)

    monkeypatch.setattr(copy_strategies, "copy_range", slow_copy_range)
    wut = build_write_using_token_list(token, [(0, 16 * MIB // 512)])

    async def scenario():
        loop = asyncio.get_running_loop()
        workers = StorageWorkers(loop)
        driver = CommandDriver(workers)
        finished: dict[str, tuple[float, object]] = {}

        def send(name: str, lun: int, cdb: bytes, payload: bytes = b"") -> None:
            outcome = env.target.execute(command(lun, cdb, payload))

            def done(result) -> None:
                finished[name] = (loop.time(), result)

            if isinstance(outcome, Pending):
                driver.run(outcome, done)
            else:
                done(outcome)

        started = loop.time()
        send("copy", 1, wut_cdb(2, len(wut)), wut)
        await asyncio.sleep(0.1)
        timer_lag = loop.time() - started - 0.1            # the loop is free while a step runs
        read_sent = loop.time()
        send("read", 2, read16(0, MIB // 512))
        while len(finished) < 2:
            await asyncio.sleep(0.01)
        workers.close()
        return timer_lag, read_sent, finished

    timer_lag, read_sent, finished = asyncio.run(scenario())
    (read_done, read), (copy_done, copy) = finished["read"], finished["copy"]
    assert copy.status == Status.GOOD and read.status == Status.GOOD
    assert bytes(read.data_in) == data[:MIB]
    assert timer_lag < 0.1, timer_lag
    assert read_done - read_sent < 0.2, read_done - read_sent
    assert copy_done - read_done > SLOW_STEP_SECONDS / 2        # the copy was still running
    assert env.read(1, 0, 16 * MIB // 512) == data


def immed(env, lun: int, token: bytes, ranges, list_id: int):
    result = env.write_using(lun, token, ranges, list_id=list_id, immed=True)
    assert result.status == Status.GOOD, result.sense.hex()


def test_background_copies_beyond_max_concurrent_copies_wait_in_progress(ext4_env):
    env = ext4_env
    env.manager.limits = CopyLimits(background_step_bytes=64 * 1024, max_concurrent_copies=1)
    env.add_lu(0, size=16 * MIB)
    data = pattern(MIB, 31)
    env.write(0, 0, data)
    token = env.token(0, [(0, MIB // 512)])
    immed(env, 0, token, [(8192, MIB // 512)], list_id=7)
    immed(env, 0, token, [(16384, MIB // 512)], list_id=8)
    for _ in range(3):
        env.workers.run_one()
    first, second = rrti(env, 7), rrti(env, 8)
    assert first[0] == 0x12 and first[1] > 0
    assert second == (0x12, 0)                          # waiting: in progress, nothing moved
    env.settle()
    assert rrti(env, 7) == (0x01, MIB // 512) and rrti(env, 8) == (0x01, MIB // 512)
    assert env.read(0, 8192, MIB // 512) == data and env.read(0, 16384, MIB // 512) == data


def test_a_waiting_background_copy_can_be_aborted_before_it_moves_anything(ext4_env):
    env = ext4_env
    env.manager.limits = CopyLimits(background_step_bytes=64 * 1024, max_concurrent_copies=1)
    env.add_lu(0, size=16 * MIB)
    token = env.token(0, [(0, 2048)])
    immed(env, 0, token, [(8192, 2048)], list_id=7)
    immed(env, 0, token, [(16384, 2048)], list_id=8)
    env.ok(coa_cdb(8))
    assert rrti(env, 8) == (0x60, 0)
    env.settle()
    assert rrti(env, 7) == (0x01, 2048)
    assert env.manager.tokens.active()[0].in_use == 0


def test_copy_operation_abort_reports_exactly_what_was_written(ext4_env):
    env = ext4_env
    env.manager.limits = CopyLimits(background_step_bytes=64 * 1024)
    env.add_lu(0, size=16 * MIB)
    data = pattern(4 * MIB, 32)
    env.write(0, 0, data)
    token = env.token(0, [(0, 8192)])
    immed(env, 0, token, [(16384, 8192)], list_id=7)
    env.workers.run_one()                               # staging (nothing overlaps)
    env.workers.run_one()                               # the first step; the second is out now
    env.ok(coa_cdb(7))                                  # waits for it, and takes its outcome
    status, done = rrti(env, 7)
    assert status == 0x60 and done == 2 * 128
    assert env.read(0, 16384, done) == data[:done * 512]
    assert env.read(0, 16384 + done, 8192 - done) == bytes((8192 - done) * 512)
    env.settle()                                        # the workers' late report changes nothing
    assert not env.manager.has_pending_work()


def test_background_copies_wait_for_workers(tmp_path):
    from tests.unit.copy.odx_helpers import Env

    env = Env(str(tmp_path))
    env.manager = CopyManager(env.state_dir, CopyLimits(background_step_bytes=64 * 1024), clock=env.clock)
    try:
        env.add_lu(0, size=16 * MIB)
        data = pattern(256 * 512, 33)
        env.write(0, 0, data)
        token = env.token(0, [(0, 256)])
        immed(env, 0, token, [(4096, 256)], list_id=7)
        assert rrti(env, 7) == (0x12, 0)
        workers = InlineWorkers()
        env.manager.use_workers(workers)
        workers.run_all()
        assert rrti(env, 7) == (0x01, 256) and env.read(0, 4096, 256) == data
    finally:
        env.close()


def start_synchronous_copy(env, token: bytes, ranges, list_id: int) -> Pending:
    data = build_write_using_token_list(token, ranges)
    pending = env.target.execute(command(0, wut_cdb(list_id, len(data)), data))
    assert isinstance(pending, Pending) and pending.work is not None
    return pending


def run_one_step(pending: Pending) -> None:
    pending.resume(pending.work.run())


def test_a_synchronous_copy_stops_between_steps_when_its_storage_is_replaced(ext4_env):
    env = ext4_env
    env.manager.limits = CopyLimits(background_step_bytes=64 * 1024, write_using_token_budget=60.0)
    env.add_lu(0, size=16 * MIB)
    data = pattern(MIB, 34)
    env.write(0, 0, data)
    token = env.token(0, [(0, 2048)])
    env.clock.tick = 3.0            # each step takes a twentieth of the budget: it stays 64 KiB
    pending = start_synchronous_copy(env, token, [(8192, 2048)], list_id=7)
    run_one_step(pending)                               # staging (nothing overlaps)
    run_one_step(pending)                               # the first 64 KiB
    env.manager.storage_replacing(env.luns[0])
    run_one_step(pending)                               # the step already handed out finishes
    assert pending.result is not None                   # and no other starts
    assert sense_triplet(pending.result) == (0xA, 0x0D, 0x04)
    written = struct.unpack_from(">I", pending.result.sense, 3)[0]
    assert written == 2 * 128
    assert env.read(0, 8192, written) == data[:written * 512]
    assert env.read(0, 8192 + written, 128) == bytes(128 * 512)


def test_an_aborted_synchronous_copy_frees_its_token_and_list_id(ext4_env):
    env = ext4_env
    env.manager.limits = CopyLimits(background_step_bytes=64 * 1024, write_using_token_budget=60.0)
    env.add_lu(0, size=16 * MIB)
    token = env.token(0, [(0, 2048)])
    pending = start_synchronous_copy(env, token, [(8192, 2048)], list_id=7)
    run_one_step(pending)
    assert pending.abort() is AbortOutcome.FINISHING     # ABORT TASK while a step is out
    run_one_step(pending)
    assert pending.result is None
    assert rrti(env, 7)[0] == 0x60
    assert env.manager.tokens.active()[0].in_use == 0
    data = build_write_using_token_list(token, [(8192, 2048)])
    assert complete_inline(env.target.execute(command(0, wut_cdb(7, len(data)), data))).status == Status.GOOD
