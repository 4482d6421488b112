"""RangeLock: writers share ranges, COMPARE AND WRITE holds its range alone, and a stream of
writers cannot keep it waiting for ever."""

from __future__ import annotations

import threading
import time

from odxtarget.storage.range_lock import RangeLock


def _wait_until(predicate, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_writers_share_and_an_exclusive_holder_keeps_overlapping_writers_out():
    lock = RangeLock()
    with lock.shared(0, 100), lock.shared(50, 100):
        pass
    with lock.exclusive(0, 100):
        assert lock.try_share(50, 10) is None
        span = lock.try_share(100, 10)           # not overlapping
        assert span is not None
        lock.unshare(span)


def test_an_exclusive_waiter_waits_for_writers_and_new_writers_wait_behind_it():
    lock = RangeLock()
    first = lock.try_share(0, 512)
    assert first is not None
    events: list[str] = []
    entered = threading.Event()

    def compare_and_write() -> None:
        with lock.exclusive(0, 512):
            events.append("exclusive")
            entered.set()

    waiter = threading.Thread(target=compare_and_write)
    waiter.start()
    _wait_until(lambda: lock._exclusive)           # it is waiting for the first writer
    assert lock.try_share(256, 512) is None         # a new writer may not slip in ahead of it
    assert not entered.is_set()
    lock.unshare(first)
    waiter.join(5)
    assert events == ["exclusive"]
    later = lock.try_share(256, 512)
    assert later is not None
    lock.unshare(later)


def test_a_stream_of_writers_cannot_starve_an_exclusive_holder():
    lock = RangeLock()
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            with lock.shared(0, 4096):
                pass

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        acquired = 0
        for _ in range(20):
            with lock.exclusive(1024, 512):
                acquired += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert acquired == 20


def test_two_overlapping_exclusive_holders_never_hold_at_once():
    lock = RangeLock()
    inside = 0
    most = 0
    guard = threading.Lock()

    def holder() -> None:
        nonlocal inside, most
        for _ in range(200):
            with lock.exclusive(0, 512):
                with guard:
                    inside += 1
                    most = max(most, inside)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=holder) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1
