"""Run libiscsi's iscsi-test-cu (Debian 1.19.0) and read its verdict test by test.

Why parse the verbose text and not ``--xml``: CUnit has no notion of a skipped test. libiscsi's
tests report "not supported here" by printing ``[SKIPPED] <reason>`` and then passing, so the XML
report (CUnitAutomated-Results.xml) lists a skipped test as a success. Only the verbose console
stream, where the test's own messages sit between CUnit's ``Test: <name> ...`` and its
``passed``/``FAILED`` verdict, tells the three outcomes apart.

Shape of that stream (stdout; libiscsi's ``logging()`` and CUnit both use it, so the order holds)::

    Suite: Inquiry
      Test: Standard ...passed
      Test: BlockLimits ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
    passed
      Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed ...
    FAILED
        1. test_get_lba_status_beyond_eol.c:44  - CU_ASSERT_EQUAL(...)

Messages printed after a verdict (on the same line or below) come from the suite's teardown and
belong to no test.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BINARY = "iscsi-test-cu"
PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"
NOT_RUN = "not run"

#: iscsi-test-cu patterns (with their test counts) that only run on a removable LU, and those
#: that only run when READ CAPACITY(16) reports more than one logical block per physical block:
#: the conformance runs give them LUs of their own.
REMOVABLE_PATTERNS = {"SCSI.StartStopUnit.*": 3, "SCSI.PreventAllow.*": 8, "SCSI.NoMedia.*": 1}
MULTI_BLOCK_PHYSICAL_PATTERNS = {"SCSI.*.InvalidDataOutSize": 3, "SCSI.WriteSame1*.UnmapUnaligned": 2}

_SUITE_LINE = re.compile(r"^Suite: (?P<suite>\S+)\s*$")
_TEST_LINE = re.compile(r"^  Test: (?P<test>.+?) \.\.\.(?P<rest>.*)$")
_VERDICT = re.compile(r"^(?P<verdict>passed|FAILED)(?=\s|$)(?P<rest>.*)$")
_SKIP_MARK = "[SKIPPED]"
_FAIL_MARK = "[FAILED]"
_ASSERTION_LINE = re.compile(r"^\s+\d+\. \S+:\d+\s+- ")


@dataclass(slots=True)
class CaseOutcome:
    """One iscsi-test-cu test: its verdict and the messages it printed while running."""

    name: str                      # FAMILY.Suite.Test
    status: str                    # PASSED | FAILED | SKIPPED | NOT_RUN
    messages: list[str] = field(default_factory=list)

    def summary(self, limit: int = 3) -> str:
        interesting = [m for m in self.messages if _SKIP_MARK in m or _FAIL_MARK in m or _ASSERTION_LINE.match(m)]
        shown = interesting[:limit] or self.messages[:limit]
        return "; ".join(m.strip() for m in shown)


@dataclass(slots=True)
class RunResult:
    """Everything one invocation of iscsi-test-cu produced."""

    command: list[str]
    returncode: int | None         # None when it had to be killed
    output: str
    errors: str
    outcomes: dict[str, CaseOutcome]
    timed_out: bool = False
    log_path: Path | None = None   # where the full output was saved, if anywhere

    def by_status(self, status: str) -> list[str]:
        return sorted(name for name, outcome in self.outcomes.items() if outcome.status == status)

    def counts(self) -> dict[str, int]:
        counts = {PASSED: 0, FAILED: 0, SKIPPED: 0, NOT_RUN: 0}
        for outcome in self.outcomes.values():
            counts[outcome.status] += 1
        return counts


def parse_verbose_output(text: str, family: str) -> dict[str, CaseOutcome]:
    """Turn iscsi-test-cu's verbose stdout into {``FAMILY.Suite.Test``: outcome}, in run order."""
    outcomes: dict[str, CaseOutcome] = {}
    suite: str | None = None
    current: CaseOutcome | None = None

    def settle(verdict: str) -> None:
        nonlocal current
        assert current is not None
        if verdict == "FAILED":
            current.status = FAILED
        elif any(_SKIP_MARK in message for message in current.messages):
            current.status = SKIPPED
        else:
            current.status = PASSED
        current = None

    for line in text.splitlines():
        suite_match = _SUITE_LINE.match(line)
        if suite_match:
            suite, current = suite_match["suite"], None
            continue
        test_match = _TEST_LINE.match(line)
        if test_match and suite is not None:
            name = f"{family}.{suite}.{test_match['test']}"
            current = CaseOutcome(name, NOT_RUN)
            outcomes[name] = current
            rest = test_match["rest"]
            verdict = _VERDICT.match(rest)
            if verdict:
                settle(verdict["verdict"])
            elif rest.strip():
                current.messages.append(rest)
            continue
        if current is not None:
            verdict = _VERDICT.match(line)
            if verdict:
                settle(verdict["verdict"])
            else:
                current.messages.append(line)
        elif outcomes and _ASSERTION_LINE.match(line):
            # CUnit lists the failed assertions right after the FAILED verdict.
            last = next(reversed(outcomes.values()))
            if last.status == FAILED:
                last.messages.append(line)
    return outcomes


def split_pattern(pattern: str) -> tuple[str, str, str]:
    """``FAMILY[.SUITE[.TEST]]`` with fnmatch wildcards, missing parts meaning "all"."""
    parts = pattern.split(".", 2)
    parts += ["*"] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def patterns_of(pattern: str) -> list[str]:
    """``--test`` takes several patterns separated by commas; one run parses a single family."""
    patterns = [part for part in pattern.split(",") if part]
    families = {split_pattern(part)[0] for part in patterns}
    if len(families) != 1:
        raise ValueError(f"--test={pattern!r}: give patterns of exactly one family, not {sorted(families)}")
    return patterns


def family_of(pattern: str) -> str:
    return split_pattern(patterns_of(pattern)[0])[0]


@functools.cache
def _listing(binary: str) -> str:
    """``iscsi-test-cu --list``: the same for the whole session, so asked once."""
    return subprocess.run([binary, "--list"], check=True, capture_output=True, text=True).stdout


def list_tests(pattern: str, binary: str = BINARY) -> list[str]:
    """The tests iscsi-test-cu would run for ``--test=pattern``, from its own ``--list``."""
    globs = [split_pattern(part) for part in patterns_of(pattern)]
    selected: list[str] = []
    for line in _listing(binary).splitlines():
        parts = line.strip().split(".")
        if len(parts) != 3 or parts[0] == "ALL":
            continue
        if any(all(fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts, three)) for three in globs):
            selected.append(line.strip())
    return selected


def suites_except(family: str, excluded: Iterable[str], binary: str = BINARY) -> str:
    """A ``--test`` value naming every suite of ``family`` but the ``excluded`` ones
    (iscsi-test-cu has no way to exclude)."""
    left_out = {f"{family}.{suite}" for suite in excluded}
    every = suites_of(list_tests(family, binary))
    if not left_out <= set(every):
        raise ValueError(f"{sorted(left_out - set(every))}: not suites of {family}")
    return ",".join(suite for suite in every if suite not in left_out)


def suites_of(test_names: Iterable[str]) -> list[str]:
    """``FAMILY.Suite`` names in first-seen order."""
    seen: dict[str, None] = {}
    for name in test_names:
        seen.setdefault(name.rsplit(".", 1)[0], None)
    return list(seen)


def run(
    urls: Sequence[str],
    pattern: str,
    *,
    dataloss: bool = True,
    timeout_seconds: float = 900,
    initiator_names: tuple[str, str] | None = None,
    log_path: Path | None = None,
    binary: str = BINARY,
    cwd: Path | None = None,
) -> RunResult:
    """Run iscsi-test-cu once for ``pattern`` (verbose mode) and parse the result.

    Tests expected from ``--list`` but absent from the output are recorded as NOT_RUN, so a
    crash, a hang (killed at ``timeout_seconds``) or a suite whose setup failed cannot pass
    silently.
    """
    if shutil.which(binary) is None:
        raise FileNotFoundError(f"{binary} not found: install Debian's libiscsi-bin (make setup)")
    command = [binary, "--verbose", f"--test={pattern}"]
    if dataloss:
        command.append("--dataloss")
    if initiator_names is not None:
        command += [f"--initiator-name={initiator_names[0]}", f"--initiator-name-2={initiator_names[1]}"]
    command += list(urls)
    timed_out = False
    try:
        completed = subprocess.run(
            command, capture_output=True, timeout=timeout_seconds, cwd=cwd,
            env={**os.environ, "LC_ALL": "C"},
        )
        stdout, stderr, returncode = completed.stdout, completed.stderr, completed.returncode
    except subprocess.TimeoutExpired as expired:
        timed_out = True
        stdout, stderr, returncode = expired.stdout or b"", expired.stderr or b"", None
    output = stdout.decode(errors="replace")
    errors = stderr.decode(errors="replace")
    if log_path is not None:
        log_path.write_text(f"$ {' '.join(command)}\n{output}\n--- stderr ---\n{errors}")
    return result_of(command, pattern, returncode, output, errors, timed_out, log_path, binary)


def result_of(command: list[str], pattern: str, returncode: int | None, output: str, errors: str,
              timed_out: bool, log_path: Path | None, binary: str = BINARY) -> RunResult:
    """Parse one run's verbose output; tests ``--list`` names for ``pattern`` but the output
    lacks are NOT_RUN, so a crash, a hang or a suite whose setup failed cannot pass silently."""
    outcomes = parse_verbose_output(output, family_of(pattern))
    for name in list_tests(pattern, binary):
        outcomes.setdefault(name, CaseOutcome(name, NOT_RUN, ["absent from iscsi-test-cu output"]))
    return RunResult(command, returncode, output, errors, outcomes, timed_out, log_path)


@dataclass(frozen=True, slots=True)
class PatternEntry:
    pattern: str
    reason: str


class PatternList:
    """A checked-in list of test-name patterns, one per line: ``PATTERN  # reason``.

    Blank lines and lines starting with '#' are ignored. Every entry must give a reason.
    """

    def __init__(self, entries: Sequence[PatternEntry], source: str = "<memory>") -> None:
        self.entries = list(entries)
        self.source = source

    @classmethod
    def load(cls, path: Path) -> PatternList:
        entries: list[PatternEntry] = []
        for number, raw in enumerate(path.read_text().splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            pattern, hash_mark, reason = line.partition("#")
            if not hash_mark or not reason.strip() or not pattern.strip():
                raise ValueError(f"{path}:{number}: expected 'PATTERN  # reason', got {raw!r}")
            entries.append(PatternEntry(pattern.strip(), reason.strip()))
        return cls(entries, str(path))

    def reason_for(self, test_name: str) -> str | None:
        for entry in self.entries:
            if fnmatch.fnmatchcase(test_name, entry.pattern):
                return entry.reason
        return None

    def __contains__(self, test_name: object) -> bool:
        return isinstance(test_name, str) and self.reason_for(test_name) is not None


@dataclass(slots=True)
class SuiteVerdict:
    """How one suite's outcomes compare with the allowed-skip and known-failure lists."""

    suite: str
    problems: list[str] = field(default_factory=list)        # make the pytest test fail
    known_failures: list[str] = field(default_factory=list)  # failed as listed: xfail
    tests_seen: int = 0


def judge_suite(
    suite: str,
    outcomes: dict[str, CaseOutcome],
    allowed_skips: PatternList,
    known_failures: PatternList,
) -> SuiteVerdict:
    """Every failed or not-run test is a problem unless listed as a known failure; every skip is
    a problem unless allowed; a known failure that did not fail is a problem too (strict)."""
    verdict = SuiteVerdict(suite)
    prefix = suite + "."
    for name, outcome in outcomes.items():
        if not name.startswith(prefix):
            continue
        verdict.tests_seen += 1
        known = known_failures.reason_for(name)
        if outcome.status in (FAILED, NOT_RUN):
            if known is not None:
                verdict.known_failures.append(f"{name}: {outcome.status} (known failure: {known})")
            else:
                verdict.problems.append(f"{name}: {outcome.status.upper()} -- {outcome.summary()}")
        elif known is not None:
            verdict.problems.append(
                f"{name}: {outcome.status} but listed in {known_failures.source} ({known}); "
                "remove the entry"
            )
        elif outcome.status == SKIPPED and name not in allowed_skips:
            verdict.problems.append(f"{name}: SKIPPED, not an allowed skip -- {outcome.summary()}")
    return verdict
