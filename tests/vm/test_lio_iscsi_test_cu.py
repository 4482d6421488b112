"""libiscsi's iscsi-test-cu SCSI family against odxtarget behind LIO, inside the guest.

The same judgement as tests/conformance/test_iscsi_test_cu.py (the native front end): every
test passes, apart from the skips in tests/conformance/allowed_skips.txt, plus SCSI.ReadOnly.*
(needs a write-protected LU) and the target reset TMFs LIO does not implement. LIO answers
REPORT LUNS, persistent reservations and RESERVE/RELEASE in the kernel, so the results of
those suites are LIO's, not odxtarget's.

The run starts in the background with the session's daemon (conftest.lio_daemon) on a LUN of
its own (CU_TARGET_IQN), whose data it destroys (--dataloss); these tests wait for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import iscsi_test_cu as cu
from tests.vm.guest_support import CU_PATTERN, CU_TIMEOUT_SECONDS

ALLOWED_SKIPS = cu.PatternList.load(Path(__file__).parents[1] / "conformance" / "allowed_skips.txt")
LIO_ALLOWED_SKIPS = (
    cu.PatternEntry("SCSI.ReadOnly.*", "needs a write-protected LU (the host's conformance run covers it)"),
    cu.PatternEntry("SCSI.*.TargetColdReset", "LIO rejects the TARGET COLD RESET task management function"),
    cu.PatternEntry("SCSI.*.TargetWarmReset", "LIO rejects the TARGET WARM RESET task management function"),
    cu.PatternEntry("SCSI.PreventAllow.ColdReset", "LIO rejects the TARGET COLD RESET task management function"),
    cu.PatternEntry("SCSI.PreventAllow.WarmReset", "LIO rejects the TARGET WARM RESET task management function"),
)
#: Failures that come from running behind LIO, not from odxtarget: judged as known failures
#: (strict: one that passes is reported, so the list cannot go stale) and reported, not failed.
LIO_INHERENT_FAILURES = cu.PatternList([
    cu.PatternEntry("SCSI.PreventAllow.ITNexusLoss",
                    "PREVENT state is per I_T nexus, and a TCMU ring carries no nexus (docs/lio.md)"),
    cu.PatternEntry("SCSI.PreventAllow.Logout",
                    "PREVENT state is per I_T nexus, and a TCMU ring carries no nexus (docs/lio.md)"),
    cu.PatternEntry("SCSI.PreventAllow.2ITNexuses",
                    "PREVENT state is per I_T nexus, and a TCMU ring carries no nexus (docs/lio.md)"),
    cu.PatternEntry("SCSI.Reserve6.Logout",
                    "LIO (kernel) keeps an SPC-2 reservation after its holder logs out"),
    cu.PatternEntry("SCSI.GetLBAStatus.UnmapSingle",
                    "libiscsi 1.19.0 expects the first descriptor at LBA+LBPPB when LBPPB >= 2, against SBC-4 5.8"),
], "LIO_INHERENT_FAILURES")
EXPECTED_TESTS = 215                 # iscsi-test-cu 1.19.0's count for SCSI


@pytest.fixture(scope="module")
def cu_result(lio_daemon) -> cu.RunResult:
    return lio_daemon.iscsi_test_cu.result()


def _suites() -> list[str]:
    if shutil.which(cu.BINARY) is None:
        return ["iscsi-test-cu-missing"]
    return cu.suites_of(cu.list_tests(CU_PATTERN))


def test_run_is_complete(cu_result):
    counts = cu_result.counts()
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    print(f"iscsi-test-cu {CU_PATTERN} against LIO: {summary}")
    assert not cu_result.timed_out, f"hit the {CU_TIMEOUT_SECONDS} s timeout ({summary})"
    assert cu_result.returncode is not None and cu_result.returncode >= 0, cu_result.errors[-4000:]
    assert "Run Summary" in cu_result.output, summary
    assert counts[cu.NOT_RUN] == 0, cu_result.by_status(cu.NOT_RUN)
    ran = counts[cu.PASSED] + counts[cu.FAILED] + counts[cu.SKIPPED]
    assert ran >= EXPECTED_TESTS, summary


@pytest.mark.parametrize("suite", _suites())
def test_suite(suite, cu_result):
    if suite == "iscsi-test-cu-missing":
        pytest.fail(f"{cu.BINARY} is not installed")
    allowed = cu.PatternList([*LIO_ALLOWED_SKIPS, *ALLOWED_SKIPS.entries], ALLOWED_SKIPS.source)
    verdict = cu.judge_suite(suite, cu_result.outcomes, allowed, LIO_INHERENT_FAILURES)
    assert verdict.tests_seen > 0, f"{suite}: no tests reported"
    if verdict.problems:
        pytest.fail("\n".join([*verdict.problems, f"full output: {cu_result.log_path}"]), pytrace=False)
    for known in verdict.known_failures:
        print(f"LIO-inherent: {known}")
