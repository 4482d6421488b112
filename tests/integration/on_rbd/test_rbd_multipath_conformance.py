"""libiscsi's iscsi-test-cu MultipathIO suite with one URL per gateway: two gateway daemons
serving one target from one RBD image, each path through its own gateway (docs/cluster.md).
The same verdict rules as tests/conformance (allowed skips, strict known failures)."""

from __future__ import annotations

import shutil

import pytest

from tests.conformance.test_iscsi_test_cu import ALLOWED_SKIPS, KNOWN_FAILURES
from tests.support import iscsi_test_cu as cu
from tests.support.daemon import MIB
from tests.support.gateways import gateways

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

LUN_BYTES = 128 * MIB
PATTERN = "SCSI.MultipathIO"
EXPECTED_TESTS = 4          # iscsi-test-cu 1.19.0: Simple, Reset, CompareAndWrite, CompareAndWriteAsync


def test_the_multipath_suite_passes_with_one_path_per_gateway(rbd_image, tmp_path):
    if shutil.which(cu.BINARY) is None:
        pytest.fail(f"{cu.BINARY} is not installed: run `make setup` (Debian package libiscsi-bin)")
    with gateways(rbd_image(LUN_BYTES), LUN_BYTES, tmp_path) as (first, second):
        result = cu.run([first.url(0), second.url(0)], PATTERN, dataloss=True, timeout_seconds=600,
                        log_path=tmp_path / "multipath-on-rbd.log")
    output = result.output
    assert "found matching LU device identifier for all (2) paths" in output, output[-2000:]
    allowed = cu.PatternList.load(ALLOWED_SKIPS)
    known = cu.PatternList.load(KNOWN_FAILURES)
    counts = result.counts()
    assert not result.timed_out and "Run Summary" in output, f"the run did not finish: {counts}"
    assert counts[cu.NOT_RUN] == 0, f"tests without a verdict: {result.by_status(cu.NOT_RUN)}"
    verdict = cu.judge_suite("SCSI.MultipathIO", result.outcomes, allowed, known)
    assert not verdict.problems, "\n".join([*verdict.problems, f"full output: {result.log_path}"])
    assert verdict.tests_seen == EXPECTED_TESTS
    assert counts[cu.PASSED] == EXPECTED_TESTS
