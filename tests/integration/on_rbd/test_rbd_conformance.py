"""libiscsi's iscsi-test-cu SCSI family against a LUN stored in an RBD image: the same verdict
rules as tests/conformance (allowed skips, strict known failures), on the other backend."""

from __future__ import annotations

import shutil

import pytest

from tests.conformance.test_iscsi_test_cu import ALLOWED_SKIPS, KNOWN_FAILURES, RUNS
from tests.support import iscsi_test_cu as cu
from tests.support.daemon import MIB, DaemonSpec, LunSpec

pytestmark = [pytest.mark.conformance, pytest.mark.slow]

LUN_BYTES = 128 * MIB


def test_the_scsi_family_passes_on_an_rbd_lun(rbd_image, daemon_factory, tmp_path):
    if shutil.which(cu.BINARY) is None:
        pytest.fail(f"{cu.BINARY} is not installed: run `make setup` (Debian package libiscsi-bin)")
    file_run = RUNS["scsi"]
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(size=LUN_BYTES, rbd=rbd_image(LUN_BYTES))]))
    result = cu.run([daemon.url(0), daemon.url(0)], file_run.pattern, dataloss=True,
                    timeout_seconds=file_run.timeout_seconds, log_path=tmp_path / "scsi-on-rbd.log")
    allowed = cu.PatternList([*file_run.extra_allowed_skips, *cu.PatternList.load(ALLOWED_SKIPS).entries],
                             str(ALLOWED_SKIPS))
    known = cu.PatternList.load(KNOWN_FAILURES)
    counts = result.counts()
    assert not result.timed_out and "Run Summary" in result.output, f"the run did not finish: {counts}"
    assert counts[cu.NOT_RUN] == 0, f"tests without a verdict: {result.by_status(cu.NOT_RUN)}"
    problems = []
    for suite in cu.suites_of(result.outcomes):
        verdict = cu.judge_suite(suite, result.outcomes, allowed, known)
        problems += verdict.problems
    assert not problems, "\n".join([*problems, f"full output: {result.log_path}"])
    assert counts[cu.PASSED] + counts[cu.FAILED] + counts[cu.SKIPPED] >= file_run.expected_tests


def test_the_persistent_reservation_suites_pass_through_two_gateways(rbd_image, daemon_factory, tmp_path):
    """SCSI.Prin* and SCSI.Prout* with the first URL on gateway 1 and the second (which the
    tool's second initiator uses where a test needs two) on gateway 2 of one target, the
    reservation state shared through RADOS (docs/cluster.md); then the other way round."""
    if shutil.which(cu.BINARY) is None:
        pytest.fail(f"{cu.BINARY} is not installed: run `make setup` (Debian package libiscsi-bin)")
    image = rbd_image(LUN_BYTES)
    gateways = [daemon_factory(DaemonSpec(iqn="iqn.2026-11.org.odxtarget:pr-suites", tpgt=tpgt, port_groups=[1, 2],
                                          luns=[LunSpec(size=LUN_BYTES, name="shared", rbd=image)]))
                for tpgt in (1, 2)]
    pattern = "SCSI.Prin*,SCSI.Prout*"
    expected = len(cu.list_tests(pattern))
    allowed = cu.PatternList.load(ALLOWED_SKIPS)
    known = cu.PatternList.load(KNOWN_FAILURES)
    for order, (first, second) in enumerate([gateways, gateways[::-1]]):
        result = cu.run([first.url(0), second.url(0)], pattern, dataloss=True, timeout_seconds=600,
                        log_path=tmp_path / f"pr-suites-{order}.log")
        counts = result.counts()
        assert not result.timed_out and "Run Summary" in result.output, f"the run did not finish: {counts}"
        assert counts[cu.NOT_RUN] == 0, f"tests without a verdict: {result.by_status(cu.NOT_RUN)}"
        problems = []
        for suite in cu.suites_of(result.outcomes):
            problems += cu.judge_suite(suite, result.outcomes, allowed, known).problems
        assert not problems, "\n".join([*problems, f"full output: {result.log_path}"])
        assert counts[cu.PASSED] == expected, f"{counts}: {result.log_path}"
