"""libiscsi's iscsi-test-cu SCSI family against a LUN stored on a block device (a loop device
over a sparse file, tests/support/loop.py): the same verdict rules as the file run (allowed
skips, strict known failures), on the block backend (docs/block.md)."""

from __future__ import annotations

import shutil

import pytest

from tests.conformance.test_iscsi_test_cu import ALLOWED_SKIPS, KNOWN_FAILURES, RUNS
from tests.support import iscsi_test_cu as cu
from tests.support.daemon import MIB, DaemonSpec, LunSpec

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

LUN_BYTES = 128 * MIB


def test_the_scsi_family_passes_on_a_block_device_lun(loop_devices, daemon_factory, tmp_path):
    if shutil.which(cu.BINARY) is None:
        pytest.fail(f"{cu.BINARY} is not installed: run `make setup` (Debian package libiscsi-bin)")
    device = loop_devices(LUN_BYTES)
    file_run = RUNS["scsi"]
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES, block=device.path)]))
    result = cu.run([daemon.url(0), daemon.url(0)], file_run.pattern, dataloss=True,
                    timeout_seconds=file_run.timeout_seconds, log_path=tmp_path / "scsi-on-block.log")
    allowed = cu.PatternList([*file_run.extra_allowed_skips, *cu.PatternList.load(ALLOWED_SKIPS).entries],
                             str(ALLOWED_SKIPS))
    known = cu.PatternList.load(KNOWN_FAILURES)
    counts = result.counts()
    assert not result.timed_out and "Run Summary" in result.output, f"the run did not finish: {counts}"
    assert counts[cu.NOT_RUN] == 0, f"tests without a verdict: {result.by_status(cu.NOT_RUN)}"
    assert counts[cu.FAILED] == 0, f"failures: {result.by_status(cu.FAILED)} (full output: {result.log_path})"
    problems = []
    for suite in cu.suites_of(result.outcomes):
        verdict = cu.judge_suite(suite, result.outcomes, allowed, known)
        problems += verdict.problems
    assert not problems, "\n".join([*problems, f"full output: {result.log_path}"])
    assert counts[cu.PASSED] + counts[cu.FAILED] + counts[cu.SKIPPED] >= file_run.expected_tests
