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
def test_a_long_write_using_token_does_not_stall_other_sessions(start_daemon):
    """A copy's steps run on storage workers, not on the daemon's event loop (docs/odx.md,
    "How copies run"): while a 512 MiB WRITE USING TOKEN copies for up to its budget, TEST
    UNIT READY on another session keeps being answered at once."""
    budget = 1.0
    blocks = 512 * MIB // 512
    daemon = start_daemon(DaemonSpec(luns=[LunSpec(0, 512 * MIB), LunSpec(1, 512 * MIB)]),
                          odx={"write_using_token_budget": budget, "background_step_bytes": "4K",
                               "max_token_transfer_bytes": "512M"})
    with OdxSession(daemon) as session, OdxSession(daemon, initiator_name="iqn.2026-11.org.odxtarget:other") as other:
        data = session.fill(0, 0, 4 * MIB, seed=63)
        token = session.token(0, [(0, blocks)], rod_type=0x0080_0001)   # copy_file_range, not reflink
        probes: list[tuple[float, float]] = []          # (when answered, how long it took)
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                started = time.monotonic()
                check(other.session.test_unit_ready(0), GOOD, "TEST UNIT READY")
                probes.append((time.monotonic(), time.monotonic() - started))
                time.sleep(0.002)

        thread = threading.Thread(target=probe)
        thread.start()
        try:
            time.sleep(0.02)
            started = time.monotonic()
            _, result = session.write_using(1, token, [(0, blocks)])
            finished = time.monotonic()
            time.sleep(0.02)
        finally:
            stop.set()
            thread.join()
        if result.status == GOOD:
            written = blocks
        else:
            check(result, COPY_TARGET_UNDERRUN, "truncated by the budget")
            written = information(result)
        assert 0 < written <= blocks
        # Not a speed limit (make bench measures latency): a stalled loop would answer no probe
        # until the copy ended, so each probe must have waited for far less than the copy ran.
        lasted = finished - started
        during = [delay for answered, delay in probes if started <= answered <= finished]
        assert len(during) >= min(3, int(lasted / 0.05)), (len(during), lasted)
        assert max(delay for _, delay in probes) < lasted / 2, (max(delay for _, delay in probes), lasted)
        checked = min(written * 512, 8 * MIB)            # the copied blocks hold the source's
        assert session.read(1, 0, checked) == (data + bytes(4 * MIB))[:checked]
