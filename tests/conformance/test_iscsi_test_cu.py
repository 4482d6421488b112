"""libiscsi's iscsi-test-cu (Debian 1.19.0) against the real daemon, one pytest test per suite.

Several iscsi-test-cu runs, each against a fresh daemon, each run once and cached for the session:

* ``scsi``     -- ``--test=SCSI --dataloss`` on a read-write LUN, with the same LUN given again as
                  the second (multipath) URL for the MultipathIO suite;
* ``readonly`` -- ``--test=SCSI.ReadOnly*`` on a read-only LUN;
* ``removable-*`` -- StartStopUnit, PreventAllow and NoMedia on a removable LUN;
* ``512e-*``    -- the tests that need 2+ logical blocks per physical block, on a 512e LUN;
* ``iscsi``    -- ``--test=iSCSI --dataloss`` (CmdSN/DataSN handling, residuals, task management).

A suite passes when every test in it passed, apart from skips allowed by allowed_skips.txt.
Failures listed in known_failures.txt are reported as xfail, and a listed test that does not
fail is an error (strict). ``test_run_is_complete`` catches runs that crashed, hung or ran
fewer tests than iscsi-test-cu lists.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import iscsi_test_cu as cu
from tests.support.iscsi_test_cu import MULTI_BLOCK_PHYSICAL_PATTERNS, REMOVABLE_PATTERNS
from tests.support.daemon import MIB, DaemonProcess, DaemonSpec, LunSpec

HERE = Path(__file__).parent
ALLOWED_SKIPS = HERE / "allowed_skips.txt"
KNOWN_FAILURES = HERE / "known_failures.txt"

pytestmark = [pytest.mark.conformance, pytest.mark.slow, pytest.mark.integration]


@dataclass(frozen=True, slots=True)
class CuRun:
    """One invocation of iscsi-test-cu and the daemon it runs against."""

    name: str
    pattern: str
    spec: DaemonSpec
    urls: Callable[[DaemonProcess], list[str]]
    expected_tests: int                      # iscsi-test-cu 1.19.0's count for the pattern
    timeout_seconds: float
    extra_allowed_skips: tuple[cu.PatternEntry, ...] = field(default_factory=tuple)


RUNS: dict[str, CuRun] = {
    run.name: run
    for run in (
        CuRun(
            name="scsi",
            pattern="SCSI",
            spec=DaemonSpec(luns=[LunSpec(lun=0, size=128 * MIB)]),
            urls=lambda daemon: [daemon.url(0), daemon.url(0)],
            expected_tests=215,
            timeout_seconds=1200,
            extra_allowed_skips=(
                cu.PatternEntry("SCSI.ReadOnly.*", "needs a write-protected LU: covered by the 'readonly' run"),
                *(cu.PatternEntry(pattern, "needs removable media (RMB=1): covered by a 'removable' run")
                  for pattern in REMOVABLE_PATTERNS),
                *(cu.PatternEntry(pattern, "needs 2+ logical blocks per physical block: covered by a '512e' run")
                  for pattern in MULTI_BLOCK_PHYSICAL_PATTERNS),
            ),
        ),
        # A removable LU (RMB=1) is what these suites are about; a SAN disk is not removable.
        *(CuRun(
            name=f"removable-{pattern.split('.')[1]}",
            pattern=pattern,
            spec=DaemonSpec(luns=[LunSpec(lun=0, size=64 * MIB, removable=True)]),
            urls=lambda daemon: [daemon.url(0)],
            expected_tests=count,
            timeout_seconds=300,
        ) for pattern, count in REMOVABLE_PATTERNS.items()),
        # 512-byte logical blocks on 4096-byte physical blocks (512e). Not used for the whole
        # family: GetLBAStatus.UnmapSingle in libiscsi 1.19.0 expects, for LBPPB > 1, a first
        # descriptor that does not cover the requested LBA, which SBC-4 5.8 forbids.
        *(CuRun(
            name=f"512e-{pattern.split('.')[-1]}",
            pattern=pattern,
            spec=DaemonSpec(luns=[LunSpec(lun=0, size=64 * MIB, physical_block_size=4096)]),
            urls=lambda daemon: [daemon.url(0)],
            expected_tests=count,
            timeout_seconds=300,
        ) for pattern, count in MULTI_BLOCK_PHYSICAL_PATTERNS.items()),
        CuRun(
            name="readonly",
            pattern="SCSI.ReadOnly*",
            spec=DaemonSpec(luns=[LunSpec(lun=0, size=64 * MIB, read_only=True)]),
            urls=lambda daemon: [daemon.url(0)],
            expected_tests=1,
            timeout_seconds=300,
        ),
        CuRun(
            name="iscsi",
            pattern="iSCSI",
            spec=DaemonSpec(luns=[LunSpec(lun=0, size=64 * MIB)]),
            urls=lambda daemon: [daemon.url(0)],
            expected_tests=15,
            timeout_seconds=600,
        ),
    )
}


def _suite_parameters() -> list[object]:
    """(run, suite) pairs from iscsi-test-cu's own --list, so new suites show up by themselves."""
    if shutil.which(cu.BINARY) is None:
        return [pytest.param(None, None, id="iscsi-test-cu-missing")]
    parameters = []
    for run in RUNS.values():
        for suite in cu.suites_of(cu.list_tests(run.pattern)):
            parameters.append(pytest.param(run.name, suite, id=f"{run.name}:{suite}"))
    return parameters


@pytest.fixture(scope="session")
def allowed_skips() -> cu.PatternList:
    return cu.PatternList.load(ALLOWED_SKIPS)


@pytest.fixture(scope="session")
def known_failures() -> cu.PatternList:
    return cu.PatternList.load(KNOWN_FAILURES)


@pytest.fixture(scope="session")
def cu_results(session_daemon_factory, tmp_path_factory) -> Callable[[str], cu.RunResult]:
    """Run each iscsi-test-cu family once per session (on first use) and cache the parsed result."""
    cache: dict[str, cu.RunResult | Exception] = {}
    log_directory = tmp_path_factory.mktemp("iscsi-test-cu")

    def results_for(run_name: str) -> cu.RunResult:
        if run_name not in cache:
            run = RUNS[run_name]
            try:
                daemon = session_daemon_factory(run.spec, name=f"cu-{run.name}")
                try:
                    cache[run_name] = cu.run(
                        run.urls(daemon), run.pattern, dataloss=True,
                        timeout_seconds=run.timeout_seconds,
                        log_path=log_directory / f"{run.name}.log",
                    )
                finally:
                    daemon.stop()
            except Exception as error:  # remembered: one broken daemon must not be retried per suite
                cache[run_name] = error
        cached = cache[run_name]
        if isinstance(cached, Exception):
            pytest.fail(f"iscsi-test-cu run '{run_name}' could not run: {cached}", pytrace=False)
        return cached

    return results_for


def _allowed_for(run: CuRun, allowed_skips: cu.PatternList) -> cu.PatternList:
    return cu.PatternList([*run.extra_allowed_skips, *allowed_skips.entries], allowed_skips.source)


@pytest.mark.parametrize(("run_name", "suite"), _suite_parameters())
def test_suite(run_name, suite, cu_results, allowed_skips, known_failures):
    if run_name is None:
        pytest.fail(f"{cu.BINARY} is not installed: run `make setup` (Debian package libiscsi-bin)")
    run = RUNS[run_name]
    result = cu_results(run_name)
    verdict = cu.judge_suite(suite, result.outcomes, _allowed_for(run, allowed_skips), known_failures)
    if verdict.tests_seen == 0:
        pytest.fail(f"{suite}: iscsi-test-cu reported no tests for this suite")
    if verdict.problems:
        lines = [f"{suite}: {len(verdict.problems)} problem(s) in {verdict.tests_seen} tests"]
        lines += [f"  {problem}" for problem in verdict.problems]
        lines += [f"  {known}" for known in verdict.known_failures]
        lines.append(f"full iscsi-test-cu output: {result.log_path}")
        pytest.fail("\n".join(lines), pytrace=False)
    if verdict.known_failures:
        pytest.xfail("; ".join(verdict.known_failures))


@pytest.mark.parametrize("run_name", list(RUNS))
def test_run_is_complete(run_name, cu_results):
    """The run finished on its own and every listed test produced a verdict."""
    if shutil.which(cu.BINARY) is None:
        pytest.fail(f"{cu.BINARY} is not installed: run `make setup` (Debian package libiscsi-bin)")
    run = RUNS[run_name]
    result = cu_results(run_name)
    counts = result.counts()
    ran = counts[cu.PASSED] + counts[cu.FAILED] + counts[cu.SKIPPED]
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    assert not result.timed_out, f"iscsi-test-cu {run.pattern} hit the {run.timeout_seconds:.0f} s timeout ({summary})"
    assert result.returncode is not None and result.returncode >= 0, (
        f"iscsi-test-cu {run.pattern} died with status {result.returncode} ({summary})\n{result.errors[-4000:]}"
    )
    assert "Run Summary" in result.output, f"iscsi-test-cu {run.pattern} printed no run summary ({summary})"
    assert counts[cu.NOT_RUN] == 0, f"tests without a verdict: {result.by_status(cu.NOT_RUN)}"
    assert ran >= run.expected_tests, (
        f"iscsi-test-cu {run.pattern} ran {ran} tests, expected {run.expected_tests} ({summary})"
    )
