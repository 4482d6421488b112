"""A blocking client of the control socket (the shell, scripts, tests).

    with AdminClient("/var/lib/odxtarget/control.sock") as admin:
        admin.call("extent.create", name="disk0", size="1G")
"""

from __future__ import annotations

import json
import socket
from typing import Any

from odxtarget.admin.protocol import ENCODING, MAX_LINE_BYTES, AdminError, encode

#: Seconds a request may take (creating a large sparse file or binding a portal is quick).
DEFAULT_TIMEOUT = 30.0


class DaemonNotRunning(AdminError):
    """Nothing answers on the control socket."""


class AdminClient:
    """One connection to a running daemon's control socket, opened on first use."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT):
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except FileNotFoundError:
                sock.close()
                raise DaemonNotRunning(f"odxtarget is not running (no control socket at {self.path})") from None
            except ConnectionRefusedError:
                sock.close()
                raise DaemonNotRunning(f"odxtarget is not running (nothing listens on {self.path})") from None
            except PermissionError:
                sock.close()
                raise AdminError(f"permission denied on {self.path}: run odxtargetcli as root") from None
            except OSError as error:
                sock.close()
                raise AdminError(f"cannot reach the daemon at {self.path}: {error.strerror or error}") from None
            self._sock = sock
        return self._sock

    def call(self, op: str, **args: Any) -> Any:
        """Run one operation; its result, or ``AdminError`` with the daemon's one-line reason."""
        request = encode({"op": op, "args": {k: v for k, v in args.items() if v is not None}})
        for attempt in (1, 2):
            sock = self._connect()
            try:
                sock.sendall(request)
                line = self._read_line(sock)
                break
            except (BrokenPipeError, ConnectionResetError, EOFError):
                self.close()  # the daemon restarted since the last request: reconnect once
                if attempt == 2:
                    raise DaemonNotRunning(f"the daemon closed the control connection ({self.path})") from None
            except socket.timeout:
                self.close()
                raise AdminError(f"the daemon did not answer within {self.timeout:g} s") from None
        reply = json.loads(line.decode(ENCODING))
        if reply.get("ok"):
            return reply.get("result")
        raise AdminError(reply.get("error") or "the daemon refused the request")

    def _read_line(self, sock: socket.socket) -> bytes:
        while b"\n" not in self._buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE_BYTES:
                raise AdminError("reply too long")
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


class UnreachableDaemon(AdminClient):
    """A client for when no control socket could be chosen: every call raises why."""

    def __init__(self, reason: AdminError):
        super().__init__("")
        self.reason = reason

    def _connect(self) -> socket.socket:
        raise self.reason
