"""Telling systemd how the daemon is doing: the sd_notify datagram protocol.

Theory of operation
-------------------
Under a ``Type=notify`` unit (contrib/systemd/odxtarget.service, docs/deployment.md) systemd
passes ``NOTIFY_SOCKET``: a Unix datagram socket, a filesystem path or, when it starts with
``@``, an abstract one (sd_notify(3)). Each message is one datagram of newline-separated
``KEY=VALUE`` assignments:

- ``READY=1`` once the portals listen and the control socket is up (systemd then starts
  what is ordered after the unit);
- ``RELOADING=1`` when SIGHUP re-reads the config file, with ``MONOTONIC_USEC`` (sd_notify(3)),
  then ``READY=1`` again;
- ``STOPPING=1`` when a stop signal arrives;
- ``STATUS=...``, one line the admin sees in ``systemctl status``;
- ``WATCHDOG=1``, every half ``WATCHDOG_USEC`` (sd_watchdog_enabled(3)), from a task on the
  event loop: a loop stuck in a command stops the pings, and systemd restarts the daemon
  (``WatchdogSec=``, ``Restart=``).

Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing. A failing send is logged once
and otherwise ignored: the service manager's bookkeeping must never stop the target.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


def notify_address(value: str) -> str | bytes:
    """The socket address of a ``NOTIFY_SOCKET`` value: ``@name`` is the abstract ``\\0name``."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(environment: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    advises; None when the watchdog is off or meant for another process (``WATCHDOG_PID``)."""
    owner = environment.get(WATCHDOG_PID)
    if owner is not None and owner.strip() != str(pid):
        return None
    try:
        usec = int(environment.get(WATCHDOG_USEC, ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


class ServiceNotifier:
    """Sends sd_notify messages to the service manager; does nothing without ``NOTIFY_SOCKET``."""

    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        environment = os.environ if environment is None else environment
        value = environment.get(NOTIFY_SOCKET, "")
        #: The socket as systemd named it, for messages.
        self.socket_name = value
        self.address: str | bytes | None = notify_address(value) if value else None
        self.watchdog_seconds = watchdog_interval(environment, os.getpid()) if self.address else None
        self._socket: socket.socket | None = None
        self._failed = False
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; True when it was sent."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message, self.address)
        except OSError as error:
            if not self._failed:
                log.warning("cannot notify the service manager at %s: %s", self.socket_name,
                            error.strerror or error)
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={_one_line(status)}")

    def reloading(self) -> None:
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                    "STATUS=reloading the configuration file")

    def stopping(self, status: str = "stopping") -> None:
        self.notify("STOPPING=1", f"STATUS={_one_line(status)}")

    def start_watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` from the running event loop until ``close``."""
        if self.watchdog_seconds is None or self._watchdog is not None:
            return
        self._watchdog = asyncio.get_running_loop().create_task(self._ping(self.watchdog_seconds),
                                                                name="systemd-watchdog")

    async def _ping(self, interval: float) -> None:
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _one_line(text: str) -> str:
    return " ".join(text.split())
