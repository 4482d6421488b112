"""libiscsi's iscsi-test-cu SCSI family against odxtarget behind LIO, inside the guest.

Judged as tests/conformance/test_iscsi_test_cu.py judges the native front end: every test
passes, apart from the skips in tests/conformance/allowed_skips.txt. The family is split the same
way (guest_support.cu_runs): the family on a plain LU, and the tests that need a removable,
512e or read-only LU on one that is, each LU on a LIO target of its own. LIO answers REPORT LUNS,
persistent reservations, RESERVE/RELEASE and task management in the kernel, so the results of
those suites are LIO's as much as odxtarget's.

What LIO itself decides is listed with its reason in guest_support:

* it rejects TARGET WARM RESET and TARGET COLD RESET, so the tests that send them skip;
* PreventAllow runs on the removable LU, where ITNexusLoss and Logout are known failures
  (strict): a prevention should end with its nexus, and a TCMU command carries none. The
  foundation issue allows PreventAllow to skip, which it does on the plain LU of the main run;
* Reserve6.Logout races with LIO's own session teardown, which bare loopback always loses
  (also with LIO's fileio backstore), so the Reserve6 suite runs on a LUN whose portal the
  guest delays by 2 ms (guest_support.RESERVE_PORT); Logout and ITNexusLoss are rerun alone
  if they still fail (guest_support.CU_RERUN_ON_FAILURE), and every attempt is reported;
* every initiator of an LU shares one nexus in odxtarget behind LIO, so ReceiveCopyResults
  (which first asks for a list identifier "with no copy in progress") runs on an LU of its
  own, where the ExtendedCopy suite's copies did not leave results under that identifier.

The runs start in the background with the session's daemon (conftest.lio_daemon), on LUNs of
their own whose data they destroy (--dataloss); these tests wait for them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import iscsi_test_cu as cu
from tests.vm.guest_support import CU_RERUN_ON_FAILURE, CU_TIMEOUT_SECONDS, CuRun, cu_runs

ALLOWED_SKIPS = cu.PatternList.load(Path(__file__).parents[1] / "conformance" / "allowed_skips.txt")
RUNS = {run.name: run for run in cu_runs()}


def _entries(pairs: tuple[tuple[str, str], ...]) -> list[cu.PatternEntry]:
    return [cu.PatternEntry(pattern, reason) for pattern, reason in pairs]


@pytest.fixture(scope="module")
def cu_background(lio_daemon):
    lio_daemon.iscsi_test_cu.wait()
    return lio_daemon.iscsi_test_cu


def _result(cu_background, run: CuRun) -> cu.RunResult:
    result = cu_background.results.get(run.name)
    if result is None:
        pytest.fail(f"iscsi-test-cu run '{run.name}' did not run within {CU_TIMEOUT_SECONDS} s "
                    f"(all runs together)", pytrace=False)
    return result


def _with_reruns(cu_background, result: cu.RunResult) -> tuple[dict[str, cu.CaseOutcome], list[str]]:
    """The run's outcomes, where a test of CU_RERUN_ON_FAILURE that failed and then passed alone
    counts as passed; and a line per such test saying what happened."""
    outcomes = dict(result.outcomes)
    notes = []
    for test, attempts in cu_background.reruns.items():
        if test not in outcomes:
            continue
        statuses = [attempt.outcomes[test].status if test in attempt.outcomes else cu.NOT_RUN
                    for attempt in attempts]
        notes.append(f"{test}: failed in the run ({CU_RERUN_ON_FAILURE[test]}); "
                     f"alone: {', '.join(statuses) or 'not rerun'}")
        if statuses and statuses[-1] == cu.PASSED:
            outcomes[test] = attempts[-1].outcomes[test]
    return outcomes, notes


def _parameters() -> list[object]:
    if shutil.which(cu.BINARY) is None:
        return [pytest.param(None, None, id="iscsi-test-cu-missing")]
    return [pytest.param(run.name, suite, id=f"{run.name}:{suite}")
            for run in RUNS.values() for suite in cu.suites_of(cu.list_tests(run.pattern))]


@pytest.mark.parametrize("run_name", list(RUNS))
def test_run_is_complete(run_name, cu_background):
    run = RUNS[run_name]
    result = _result(cu_background, run)
    counts = result.counts()
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    print(f"iscsi-test-cu against LIO, run {run.name} "
          f"({len(cu.suites_of(cu.list_tests(run.pattern)))} suites): {summary}")
    assert not result.timed_out, f"hit the {CU_TIMEOUT_SECONDS} s timeout ({summary})"
    assert result.returncode is not None and result.returncode >= 0, result.errors[-4000:]
    assert "Run Summary" in result.output, summary
    assert counts[cu.NOT_RUN] == 0, result.by_status(cu.NOT_RUN)
    ran = counts[cu.PASSED] + counts[cu.FAILED] + counts[cu.SKIPPED]
    assert ran == run.expected_tests, summary


@pytest.mark.parametrize(("run_name", "suite"), _parameters())
def test_suite(run_name, suite, cu_background):
    if run_name is None:
        pytest.fail(f"{cu.BINARY} is not installed")
    run = RUNS[run_name]
    result = _result(cu_background, run)
    outcomes, rerun_notes = _with_reruns(cu_background, result)
    allowed = cu.PatternList([*_entries(run.extra_allowed_skips), *ALLOWED_SKIPS.entries], ALLOWED_SKIPS.source)
    known = cu.PatternList(_entries(run.known_failures), f"guest_support.cu_runs ({run.name})")
    verdict = cu.judge_suite(suite, outcomes, allowed, known)
    assert verdict.tests_seen > 0, f"{suite}: no tests reported"
    for note in rerun_notes:
        if note.startswith(suite + "."):
            print(f"rerun: {note}")
    if verdict.problems:
        pytest.fail("\n".join([*verdict.problems, f"full output: {result.log_path}"]), pytrace=False)
    for failure in verdict.known_failures:
        print(f"LIO-inherent: {failure}")
