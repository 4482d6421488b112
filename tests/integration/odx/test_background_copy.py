"""IMMED=1 (SBC-4, WRITE USING TOKEN): the command returns GOOD at once and the copy runs in
the background, on the daemon's storage workers (docs/odx.md, "How copies run"); RRTI shows
12h with a growing transfer count; COPY OPERATION ABORT ends it with 60h and completion status
TASK ABORTED; errors found later are reported through RRTI only. Small background steps
(config "odx") make the copy slow enough to watch."""

from __future__ import annotations

import pytest

from tests.integration.odx.odx_support import (
    GOOD, INVALID_FIELD_IN_CDB, MIB, ROD_PIT_CHANGE_VULNERABLE, SAM_TASK_ABORTED, STATUS_COMPLETED,
    STATUS_COMPLETED_WITH_ERRORS, STATUS_IN_BACKGROUND, STATUS_PARTIAL, STATUS_TERMINATED, OdxSession, check,
    pattern,
)

pytestmark = [pytest.mark.integration]

SLOW_STEPS = {"background_step_bytes": "4K"}
SIZE = 32 * MIB
BLOCKS = SIZE // 512


@pytest.fixture
def slow(start_daemon):
    daemon = start_daemon(odx=SLOW_STEPS)
    with OdxSession(daemon) as session:
        yield session


def in_progress(info) -> bool:
    return info.status == STATUS_IN_BACKGROUND


def test_progress_then_completion(slow: OdxSession):
    data = slow.fill(0, 0, SIZE, seed=71)
    token = slow.token(0, [(0, BLOCKS)])
    list_id, result = slow.write_using(1, token, [(0, BLOCKS)], immed=True)
    check(result, GOOD, "WUT IMMED=1")
    first = slow.wait_status(1, list_id, lambda info: info.transfer_count > 0 or not in_progress(info))
    assert first.status == STATUS_IN_BACKGROUND and 0 < first.transfer_count < BLOCKS
    assert 50 <= first.delay <= 1000                     # ESTIMATED STATUS UPDATE DELAY while running
    later = slow.wait_status(1, list_id, lambda info: info.transfer_count > first.transfer_count
                             or not in_progress(info))
    assert later.status == STATUS_IN_BACKGROUND and later.transfer_count > first.transfer_count
    final = slow.wait_status(1, list_id, lambda info: not in_progress(info), timeout=60)
    assert (final.status, final.transfer_count, final.delay) == (STATUS_COMPLETED, BLOCKS, 0xFFFF_FFFE)
    assert slow.read(1, 0, SIZE) == data
    check(slow.rrti(1, list_id), INVALID_FIELD_IN_CDB, "a delivered completion is gone")


def test_copy_operation_abort(slow: OdxSession):
    data = slow.fill(0, 0, SIZE, seed=72)
    token = slow.token(0, [(0, BLOCKS)])
    list_id, result = slow.write_using(1, token, [(0, BLOCKS)], immed=True)
    check(result, GOOD, "WUT IMMED=1")
    running = slow.wait_status(1, list_id, lambda info: info.transfer_count > 0 or not in_progress(info))
    assert running.status == STATUS_IN_BACKGROUND
    check(slow.abort(1, list_id), GOOD, "COPY OPERATION ABORT")
    info = slow.rrti_parsed(1, list_id)
    assert (info.status, info.completion_status, info.delay) == (STATUS_TERMINATED, SAM_TASK_ABORTED, 0xFFFF_FFFE)
    done = info.transfer_count
    assert running.transfer_count <= done < BLOCKS
    assert slow.read(1, 0, done * 512) == data[:done * 512]
    assert slow.read(1, done, SIZE - done * 512) == bytes(SIZE - done * 512)
    check(slow.abort(1, list_id), INVALID_FIELD_IN_CDB, "nothing left to abort")
    check(slow.write_using(1, token, [(0, 8)])[1], GOOD, "the token outlives the aborted copy")


def test_background_errors_are_reported_through_rrti_only(slow: OdxSession):
    slow.fill(0, 0, 64 * 512, seed=73)
    token = slow.token(0, [(0, 64)])
    corrupt = token[:300] + bytes((token[300] ^ 1,)) + token[301:]
    list_id, result = slow.write_using(1, corrupt, [(0, 64)], immed=True)
    check(result, GOOD, "IMMED=1 accepts the list")
    info = slow.rrti_parsed(1, list_id)
    assert (info.status, info.completion_status, info.transfer_count) == (STATUS_COMPLETED_WITH_ERRORS, 0x02, 0)
    assert (info.sense[2] & 0x0F, info.sense[12], info.sense[13]) == (0x05, 0x23, 0x05)


def test_a_write_to_the_source_stops_a_background_copy_from_a_live_token(slow: OdxSession):
    data = slow.fill(0, 0, SIZE, seed=74)
    token = slow.token(0, [(0, BLOCKS)], rod_type=ROD_PIT_CHANGE_VULNERABLE)
    list_id, result = slow.write_using(1, token, [(0, BLOCKS)], immed=True)
    check(result, GOOD, "WUT IMMED=1")
    slow.wait_status(1, list_id, lambda info: info.transfer_count > 0 or not in_progress(info))
    slow.write(0, BLOCKS - 1, pattern(512, 75))
    info = slow.wait_status(1, list_id, lambda info: not in_progress(info), timeout=60)
    assert info.status == STATUS_PARTIAL and 0 < info.transfer_count < BLOCKS
    assert (info.sense[2] & 0x0F, info.sense[12], info.sense[13]) == (0x0A, 0x0D, 0x04)
    done = info.transfer_count
    assert slow.read(1, 0, done * 512) == data[:done * 512]
