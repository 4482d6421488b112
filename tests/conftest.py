"""Fixtures shared by the whole suite.

Daemon fixtures start the real ``python -m odxtarget serve`` on a free 127.0.0.1 port:

* ``odx_daemon``       -- one started daemon; parametrize it indirectly with a DaemonSpec::

      @pytest.mark.parametrize("odx_daemon", [DaemonSpec(luns=[LunSpec(block_size=4096)])],
                               indirect=True)
      def test_x(odx_daemon): ...

* ``daemon_factory``   -- start as many daemons as a test needs: ``daemon_factory(spec)``;
* ``session_daemon_factory`` -- the same for session-scoped fixtures (conformance runs).

``loop_devices`` makes loop devices over sparse files for block-device LUNs (docs/block.md).

Every daemon started through these is stopped at teardown, and its log is attached to the
report of a failing test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.daemon import DaemonProcess, DaemonSpec

if TYPE_CHECKING:
    from tests.support.loop import LoopDevice

LOG_TAIL_CHARACTERS = 20_000

DaemonFactory = Callable[..., DaemonProcess]


class _DaemonPool:
    """Starts daemons in numbered subdirectories of one base directory and stops them all."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.daemons: list[DaemonProcess] = []

    def start(self, spec: DaemonSpec | None = None, *, name: str | None = None) -> DaemonProcess:
        directory = self.base / (name or f"daemon{len(self.daemons)}")
        daemon = DaemonProcess(spec or DaemonSpec(), directory)
        self.daemons.append(daemon)
        daemon.start()
        return daemon

    def stop_all(self) -> None:
        for daemon in self.daemons:
            daemon.stop()

    def log_tails(self) -> list[tuple[str, str]]:
        return [
            (f"odxtarget log ({daemon.directory.name})", daemon.log_text()[-LOG_TAIL_CHARACTERS:])
            for daemon in self.daemons
        ]


def _attach_logs(request: pytest.FixtureRequest, pool: _DaemonPool) -> None:
    for title, text in pool.log_tails():
        request.node.add_report_section("teardown", title, text)


@pytest.fixture
def daemon_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DaemonFactory]:
    pool = _DaemonPool(tmp_path)
    try:
        yield pool.start
    finally:
        pool.stop_all()
        _attach_logs(request, pool)


@pytest.fixture
def odx_daemon(daemon_factory: DaemonFactory, request: pytest.FixtureRequest) -> DaemonProcess:
    spec = getattr(request, "param", None)
    if spec is not None and not isinstance(spec, DaemonSpec):
        raise TypeError(f"odx_daemon parameter must be a DaemonSpec, got {type(spec).__name__}")
    return daemon_factory(spec)


@pytest.fixture(scope="session")
def session_daemon_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonFactory]:
    pool = _DaemonPool(tmp_path_factory.mktemp("daemons"))
    try:
        yield pool.start
    finally:
        pool.stop_all()


@pytest.fixture(scope="session")
def xfs_mount() -> Iterator[str]:
    """A session-wide XFS (reflink=1) loop mount, for the copy-offload tests; removed at the end.

    Skips where it cannot be made (not root, no xfsprogs), but FAILS under CI=true: the
    reflink code paths must be tested in CI.
    """
    from tests.unit.copy.odx_helpers import xfs_reflink_mount, xfs_unavailable_is_fatal

    manager = xfs_reflink_mount()
    try:
        directory = manager.__enter__()
    except OSError as error:
        if xfs_unavailable_is_fatal():
            pytest.fail(f"CI=true but no XFS reflink mount: {error}")
        pytest.skip(f"no XFS reflink mount: {error}")
    try:
        yield directory
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture
def loop_devices(tmp_path: Path) -> Iterator[Callable[..., "LoopDevice"]]:
    """``loop_devices(size, sector_size=512)``: a new loop device over a sparse file, detached
    at teardown (tests/support/loop.py); fails under CI=true where loop devices are unusable."""
    from tests.support.loop import loop_device_maker

    with loop_device_maker(tmp_path / "loop") as make:
        yield make
