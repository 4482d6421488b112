"""Fixtures of the adversarial suite.

``arena_factory(spec)`` starts a daemon (through the root ``daemon_factory``, so its log lands in
a failing test's report) with a witness session already working, and returns an ``Arena``.
At teardown every witness stops, and the whole log of every daemon the test started is checked
once more for tracebacks: lines written after the test's own last check count too.

Modules that share one daemon (``session_daemon_factory``) hand each test's ``DaemonLog`` to
``attach_log_on_failure``, so a failing test's report carries the log lines of that test.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator

import pytest

from tests.integration.adversarial.support import Arena, DaemonLog, adversary_spec, assert_logs_clean, start_arena
from tests.support.daemon import DaemonSpec

ArenaFactory = Callable[..., Arena]


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed


@pytest.fixture
def arena_factory(daemon_factory, request: pytest.FixtureRequest) -> Iterator[ArenaFactory]:
    arenas: list[Arena] = []

    def start(spec: DaemonSpec | None = None, *, witness_chap: tuple[str, str] | None = None) -> Arena:
        arena = start_arena(daemon_factory(spec or adversary_spec()), witness_chap=witness_chap)
        arenas.append(arena)
        return arena

    yield start
    for arena in arenas:
        arena.witness.stop()
    if not request.node.stash.get(CALL_FAILED, True):
        assert_logs_clean([arena.daemon for arena in arenas])


@pytest.fixture
def attach_log_on_failure(request: pytest.FixtureRequest) -> Iterator[Callable[[DaemonLog], None]]:
    logs: list[DaemonLog] = []
    yield logs.append
    if request.node.stash.get(CALL_FAILED, False):
        for log in logs:
            request.node.add_report_section("teardown", f"odxtarget log of this test ({log.daemon.directory.name})",
                                            log.new_text()[-20_000:])


@pytest.fixture
def many_file_descriptors() -> Iterator[int]:
    """Raise this process's RLIMIT_NOFILE (we run as root, so the hard limit too); restored after."""
    wanted = 8192
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
    try:
        yield wanted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
