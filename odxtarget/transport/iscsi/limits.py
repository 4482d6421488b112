"""What one initiator, one source address and the whole daemon may make the native iSCSI
front end hold (docs/security.md, "Limits").

Every network peer is untrusted, logged in or not, so every buffer, table and timer that a
peer can grow has a bound here. Each field is a key of the configuration's ``iscsi`` section
(docs/configuration.md), with the default below. Plain data: the configuration parser and
the connection code both read this class, and it imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

KiB = 1024
MiB = 1024 * KiB

#: RFC 7143 13.12-13.14: data segment and burst lengths lie in 512 .. 2**24 - 1.
MIN_DATA_BYTES = 512


@dataclass(frozen=True, slots=True)
class IscsiLimits:
    """Bounds of the native iSCSI front end; see the module docstring."""

    # -- per connection -------------------------------------------------------------------
    #: Tasks a connection may hold at once (waiting for their CmdSN turn, their Data-Out, or
    #: their execution), immediate commands included. Also the CmdSN window we advertise
    #: (MaxCmdSN - ExpCmdSN + 1, RFC 7143 4.2.2.1), so it bounds out-of-order PDUs held too.
    #: Past it an immediate command gets Reject 06h and a numbered one TASK SET FULL.
    max_tasks_per_connection: int = 128
    #: Bytes of Data-In, responses and other PDUs produced but not yet taken by the socket.
    #: Past it the connection stops reading from its socket until the peer catches up.
    max_pending_send_bytes: int = 32 * MiB
    #: Bytes of Data-Out the connection buffers for tasks not yet executed: R2Ts are only
    #: sent while the solicited bursts fit (one burst is always allowed, so a write larger
    #: than this still progresses).
    max_data_out_bytes: int = 64 * MiB
    #: Bytes of key=value text in one Login or Text exchange (C-bit continuations summed).
    max_text_bytes: int = 64 * KiB

    # -- per daemon and per source address -----------------------------------------------
    #: TCP connections the daemon accepts at once; beyond, new ones are closed at accept.
    max_connections: int = 1024
    #: TCP connections from one source IP address at once.
    max_connections_per_address: int = 128
    #: Sessions (normal and discovery) logged in at once; a login beyond gets 03/02.
    max_sessions: int = 1024
    #: Sessions from one source IP address at once.
    max_sessions_per_address: int = 64
    #: Seconds a connection may take to reach full feature phase before it is closed.
    login_timeout: float = 15.0
    #: Seconds a discovery session may stay silent before it is closed.
    discovery_idle_timeout: float = 60.0
    #: Failed logins from one source IP address within ``failed_login_window`` seconds after
    #: which its new connections are closed at accept until the window has passed.
    max_failed_logins_per_address: int = 20
    failed_login_window: float = 60.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{item.name} must be a positive number, got {value!r}")
        if self.max_tasks_per_connection > 1 << 16:
            raise ValueError("max_tasks_per_connection must be at most 65536")
        if self.max_text_bytes < 8 * KiB:
            raise ValueError("max_text_bytes must be at least 8192 (RFC 7143 13.12 login PDU size)")
        if self.max_pending_send_bytes < MIN_DATA_BYTES or self.max_data_out_bytes < MIN_DATA_BYTES:
            raise ValueError(f"max_pending_send_bytes and max_data_out_bytes must be at least {MIN_DATA_BYTES}")
        if self.max_connections_per_address > self.max_connections:
            raise ValueError("max_connections_per_address must not exceed max_connections")
        if self.max_sessions_per_address > self.max_sessions:
            raise ValueError("max_sessions_per_address must not exceed max_sessions")


#: The defaults, for code that needs one value before a configuration is read.
DEFAULT_LIMITS = IscsiLimits()
