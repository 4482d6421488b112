"""The WRITE USING TOKEN time budget (docs/odx.md): when it runs out the copy stops at a block
boundary with COPY ABORTED 0Dh/04h, VALID=1, INFORMATION = blocks written; RRTI says 03h with
that count; an initiator that continues from there (as Windows and ``odxtarget copy`` do)
completes the copy. A tiny budget in the config's "odx" section forces the truncation."""

from __future__ import annotations

import threading
import time

import pytest

from odxtarget.initiator import odx_copy
from tests.support.daemon import DaemonSpec, LunSpec
from tests.integration.odx.odx_support import (
    ACTION_WUT, COPY_TARGET_UNDERRUN, GOOD, MIB, STATUS_PARTIAL, OdxSession, check, information,
)

pytestmark = [pytest.mark.integration]

#: Smaller than any step can take: the copy stops after its first step of 1 MiB.
TINY_BUDGET = {"write_using_token_budget": 1e-6, "background_step_bytes": "1M"}
SIZE = 16 * MIB
BLOCKS = SIZE // 512


def test_budget_truncates_at_a_block_boundary_and_rrti_reports_it(start_daemon):
    daemon = start_daemon(odx=TINY_BUDGET)
    with OdxSession(daemon) as session:
        data = session.fill(0, 0, SIZE, seed=61)
        token = session.token(0, [(0, BLOCKS)])
        list_id, result = session.write_using(1, token, [(0, BLOCKS)])
        check(result, COPY_TARGET_UNDERRUN, "truncated by the time budget")
        written = information(result)
        assert 0 < written < BLOCKS
        assert session.read(1, 0, written * 512) == data[:written * 512]
        assert session.read(1, written, SIZE - written * 512) == bytes(SIZE - written * 512)
        info = session.rrti_parsed(1, list_id)
        assert (info.action, info.status, info.transfer_count, info.completion_status) == (
            ACTION_WUT, STATUS_PARTIAL, written, 0x02)
        assert (info.sense[2] & 0x0F, info.sense[12], info.sense[13]) == (0x0A, 0x0D, 0x04)
        # Continue from where it stopped, as Windows does: OFFSET INTO ROD = blocks done.
        done = written
        for _ in range(BLOCKS):
            if done == BLOCKS:
                break
            _, result = session.write_using(1, token, [(done, BLOCKS - done)], offset_into_rod=done)
            if result.status == 0:
                done = BLOCKS
            else:
                check(result, COPY_TARGET_UNDERRUN, "continuation")
                done += information(result)
        assert done == BLOCKS
        assert session.read(1, 0, SIZE) == data


def test_odxtarget_copy_finishes_a_copy_made_of_truncated_writes(start_daemon):
    daemon = start_daemon(odx=TINY_BUDGET)
    with OdxSession(daemon) as session:
        data = session.fill(0, 100, SIZE, seed=62)
        source = odx_copy.parse_iscsi_url(f"{daemon.url(0)}?lba=100&blocks={BLOCKS}")
        destination = odx_copy.parse_iscsi_url(f"{daemon.url(1)}?lba=7")
        summary = odx_copy.copy_range(source, destination, allow_fallback=False)
        assert (summary.method, summary.bytes) == ("odx", SIZE)
        assert session.read(1, 7, SIZE) == data


@pytest.mark.parametrize("filesystem", ["ext4"])     # on XFS even this copy is a quick reflink
def test_a_long_write_does_not_stall_other_sessions_for_more_than_its_budget(start_daemon):
    """Commands run on the daemon's one event loop, so a synchronous WRITE USING TOKEN holds
    every other session for as long as it runs: the per-command budget bounds that. A 512 MiB
    copy takes several budgets of 20 ms, so the write must come back truncated, and TEST UNIT
    READY on another session must never wait much longer than one budget."""
    budget = 0.02
    blocks = 512 * MIB // 512
    daemon = start_daemon(DaemonSpec(luns=[LunSpec(0, 512 * MIB), LunSpec(1, 512 * MIB)]),
                          odx={"write_using_token_budget": budget, "background_step_bytes": "4K",
                               "max_token_transfer_bytes": "512M"})
    with OdxSession(daemon) as session, OdxSession(daemon, initiator_name="iqn.2026-11.org.odxtarget:other") as other:
        data = session.fill(0, 0, 4 * MIB, seed=63)
        token = session.token(0, [(0, blocks)], rod_type=0x0080_0001)   # copy_file_range, not reflink
        delays: list[float] = []
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                started = time.monotonic()
                check(other.session.test_unit_ready(0), GOOD, "TEST UNIT READY")
                delays.append(time.monotonic() - started)
                time.sleep(0.002)

        thread = threading.Thread(target=probe)
        thread.start()
        try:
            time.sleep(0.02)
            started = time.monotonic()
            _, result = session.write_using(1, token, [(0, blocks)])
            elapsed = time.monotonic() - started
            time.sleep(0.02)
        finally:
            stop.set()
            thread.join()
        check(result, COPY_TARGET_UNDERRUN, "truncated by the budget")
        written = information(result)
        assert 0 < written < blocks
        assert elapsed < budget + 0.25, elapsed
        assert len(delays) > 3 and max(delays) < budget + 0.25, max(delays)
        checked = min(written * 512, 8 * MIB)            # the copied blocks hold the source's
        assert session.read(1, 0, checked) == (data + bytes(4 * MIB))[:checked]
