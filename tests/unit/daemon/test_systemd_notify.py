"""The sd_notify datagram protocol (odxtarget.systemd): addresses, the watchdog interval, and
real datagrams on a Unix socket bound by the test (a path, and an abstract ``@`` name)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from odxtarget.systemd import ServiceNotifier, notify_address, watchdog_interval

RECEIVE_TIMEOUT = 10.0


@pytest.fixture
def listener(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(RECEIVE_TIMEOUT)
    yield sock, str(path)
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_an_at_sign_names_an_abstract_socket():
    assert notify_address("@/org/freedesktop/systemd1/notify") == b"\0/org/freedesktop/systemd1/notify"
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"


@pytest.mark.parametrize("environment, expected", [
    ({"WATCHDOG_USEC": "20000000"}, 10.0),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "4242"}, 1.5),
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "4243"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_the_watchdog_pings_at_half_its_timeout_when_it_is_meant_for_us(environment, expected):
    assert watchdog_interval(environment, 4242) == expected


def test_without_notify_socket_nothing_is_sent():
    notifier = ServiceNotifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    assert notifier.watchdog_seconds is None


def test_ready_stopping_and_reloading_reach_a_path_socket(listener):
    sock, path = listener
    notifier = ServiceNotifier({"NOTIFY_SOCKET": path})
    try:
        notifier.ready("serving 1 target(s)\non 127.0.0.1:3260")
        assert receive(sock) == ["READY=1", "STATUS=serving 1 target(s) on 127.0.0.1:3260"]
        notifier.reloading()
        reloading = receive(sock)
        assert reloading[0] == "RELOADING=1"
        assert reloading[1].startswith("MONOTONIC_USEC=") and int(reloading[1].split("=")[1]) > 0
        notifier.stopping("SIGTERM received")
        assert receive(sock) == ["STOPPING=1", "STATUS=SIGTERM received"]
    finally:
        notifier.close()


def test_an_abstract_notify_socket_is_reached():
    name = f"odxtarget-test-{os.getpid()}-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(RECEIVE_TIMEOUT)
    notifier = ServiceNotifier({"NOTIFY_SOCKET": "@" + name})
    try:
        assert notifier.notify("READY=1")
        assert receive(sock) == ["READY=1"]
    finally:
        notifier.close()
        sock.close()


def test_a_vanished_notify_socket_is_logged_once_and_never_raises(tmp_path, caplog):
    notifier = ServiceNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    try:
        assert notifier.notify("READY=1") is False
        assert notifier.notify("WATCHDOG=1") is False
    finally:
        notifier.close()
    warnings = [r for r in caplog.records if "cannot notify the service manager" in r.getMessage()]
    assert len(warnings) == 1


def test_watchdog_pings_come_from_the_event_loop_until_closed(listener):
    sock, path = listener
    sock.setblocking(False)

    async def scenario() -> list[str]:
        notifier = ServiceNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000",
                                    "WATCHDOG_PID": str(os.getpid())})
        assert notifier.watchdog_seconds == 0.01
        notifier.start_watchdog()
        pings: list[str] = []
        loop = asyncio.get_running_loop()
        while len(pings) < 3:
            pings.append((await asyncio.wait_for(loop.sock_recv(sock, 4096), RECEIVE_TIMEOUT)).decode())
        notifier.close()
        await asyncio.sleep(0.05)
        try:
            late = sock.recv(4096)
        except BlockingIOError:
            late = b""
        while late:  # a ping already in flight when closed; then the pings must stop
            try:
                late = sock.recv(4096)
            except BlockingIOError:
                break
        await asyncio.sleep(0.05)
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
        return pings

    assert asyncio.run(scenario()) == ["WATCHDOG=1"] * 3
