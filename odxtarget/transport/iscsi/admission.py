"""Who may open a connection or a session, counted per source address and per daemon
(docs/security.md, "Limits").

Theory of operation
-------------------
``Admission`` is shared by every connection of one ``IscsiServer``. The server asks
``admit_connection`` when a TCP connection arrives and calls ``connection_closed`` when it
goes; the login code asks ``admit_session`` before it registers a session, and reports each
refused login with ``login_failed`` (or, for a refusal that is not the peer's failure,
``login_refused``), naming its Login Response status; ``refused_logins`` counts them by that
name for the metrics endpoint (docs/metrics.md). A source address that failed ``max_failed_logins_per_address``
logins within ``failed_login_window`` seconds has its new connections closed at accept until the
oldest of those failures leaves the window: a password-guessing peer gets a few tries a minute,
and everyone else is served as before.

Pure and deterministic: time arrives as ``now``; nothing here touches a socket. The failure
history is bounded too (``MAX_TRACKED_ADDRESSES``), so spoofed or many source addresses
cannot grow it without limit.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque

from odxtarget.transport.iscsi.limits import IscsiLimits

#: Source addresses whose failed logins are remembered; the least recently failing is forgotten.
MAX_TRACKED_ADDRESSES = 4096


class Admission:
    """Connection, session and failed-login accounting; see the module docstring."""

    def __init__(self, limits: IscsiLimits):
        self.limits = limits
        self._connections: Counter[str] = Counter()
        self._sessions: Counter[str] = Counter()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        #: Refused logins by reason: a ``LoginStatus`` name in lower case (RFC 7143 11.13.5).
        self.refused_logins: Counter[str] = Counter()

    # -- connections ------------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return sum(self._connections.values())

    @property
    def session_count(self) -> int:
        return sum(self._sessions.values())

    def admit_connection(self, address: str, now: float) -> str | None:
        """Count a new connection from ``address``; None when admitted, else why it is not
        (the caller closes it and does not call ``connection_closed``)."""
        limits = self.limits
        if self.throttled(address, now):
            return (f"{limits.max_failed_logins_per_address} failed logins within "
                    f"{limits.failed_login_window:g} s")
        if self.connection_count >= limits.max_connections:
            return f"the daemon holds max_connections ({limits.max_connections}) connections"
        if self._connections[address] >= limits.max_connections_per_address:
            return f"the address holds max_connections_per_address ({limits.max_connections_per_address}) connections"
        self._connections[address] += 1
        return None

    def connection_closed(self, address: str) -> None:
        self._release(self._connections, address)

    # -- sessions ---------------------------------------------------------------------------

    def admit_session(self, address: str) -> str | None:
        """Count a new session from ``address``; None when admitted, else why it is not."""
        limits = self.limits
        if self.session_count >= limits.max_sessions:
            return f"the daemon holds max_sessions ({limits.max_sessions}) sessions"
        if self._sessions[address] >= limits.max_sessions_per_address:
            return f"the address holds max_sessions_per_address ({limits.max_sessions_per_address}) sessions"
        self._sessions[address] += 1
        return None

    def session_closed(self, address: str) -> None:
        self._release(self._sessions, address)

    # -- failed logins ----------------------------------------------------------------------

    def login_refused(self, reason: str) -> None:
        """Count a refused login by ``reason`` without holding it against its address."""
        self.refused_logins[reason] += 1

    def login_failed(self, address: str, now: float, reason: str = "initiator_error") -> None:
        """A login from ``address`` failed for ``reason``: counted, and toward throttling."""
        self.login_refused(reason)
        history = self._failures.pop(address, None)
        if history is None:
            history = deque(maxlen=self.limits.max_failed_logins_per_address)
            while len(self._failures) >= MAX_TRACKED_ADDRESSES:
                self._failures.popitem(last=False)
        history.append(now)
        self._failures[address] = history

    def throttled(self, address: str, now: float) -> bool:
        """``address`` failed the most logins allowed within the window ending at ``now``."""
        history = self._failures.get(address)
        if history is None:
            return False
        window = self.limits.failed_login_window
        while history and history[0] <= now - window:
            history.popleft()
        if not history:
            del self._failures[address]
            return False
        return len(history) >= self.limits.max_failed_logins_per_address

    @staticmethod
    def _release(counter: Counter[str], address: str) -> None:
        if counter[address] <= 1:
            counter.pop(address, None)
        else:
            counter[address] -= 1
