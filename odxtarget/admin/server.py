"""The daemon side of the control socket: a Unix stream socket, mode 0600, root only.

Each connection is read line by line; each line is one request answered by one line
(``protocol``). Only root and the daemon's own user may talk to it: the socket file is created
0600 (under a 0700 directory when we create the directory) and every peer's credentials are
checked with SO_PEERCRED, so a permissive umask or directory cannot open it up. The same
credentials name the peer in the log line of every change it makes (``audit``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
import struct

from odxtarget.admin.audit import Peer, log_change
from odxtarget.admin.ops import OPERATIONS, AdminOperations
from odxtarget.admin.protocol import MAX_LINE_BYTES, AdminError, decode_request, encode, failure, success

log = logging.getLogger("odxtarget.admin")

SOCKET_MODE = 0o600
DIRECTORY_MODE = 0o700
_PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ControlSocketError(Exception):
    """The control socket cannot be set up; the message is one line."""


def peer_credentials(sock: socket.socket) -> Peer:
    """The pid, uid and gid of the process at the other end of a Unix socket (unix(7))."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER_CREDENTIALS.size)
    except OSError:
        return Peer(None, None)
    pid, uid, gid = _PEER_CREDENTIALS.unpack(raw)
    return Peer(pid, uid, gid)


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead daemon; refuse if a live one answers on it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(f"control socket {path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as error:
        if error.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ControlSocketError(f"control socket {path}: {error.strerror}") from None
        os.unlink(path)
        return
    finally:
        probe.close()
    raise ControlSocketError(f"control socket {path} is in use by another running daemon")


class ControlServer:
    """Serves ``AdminOperations`` on a Unix socket until ``close``."""

    def __init__(self, operations: AdminOperations, path: str):
        self.operations = operations
        self.path = os.path.abspath(path)
        self._server: asyncio.AbstractServer | None = None
        self._allowed_uids = {0, os.geteuid()}
        self._handlers: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Bind the socket (creating its directory 0700 if missing).

        Raises:
            ControlSocketError: the path is taken by a live daemon or cannot be bound.
        """
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=DIRECTORY_MODE, exist_ok=True)
            _remove_stale_socket(self.path)
            old_umask = os.umask(0o177)
            try:
                self._server = await asyncio.start_unix_server(
                    self._serve_connection, path=self.path, limit=MAX_LINE_BYTES)
            finally:
                os.umask(old_umask)
            os.chmod(self.path, SOCKET_MODE)
        except OSError as error:
            raise ControlSocketError(f"control socket {self.path}: {error.strerror or error}") from None
        log.info("control socket listening on %s (odxtargetcli --socket %s)", self.path, self.path)

    async def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for task in list(self._handlers):
            task.cancel()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            sock = writer.get_extra_info("socket")
            peer = peer_credentials(sock) if sock is not None else Peer(None, None)
            if peer.uid not in self._allowed_uids:
                writer.write(encode(failure("permission denied: the control socket is for root only")))
                await writer.drain()
                return
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(encode(failure(f"request longer than {MAX_LINE_BYTES} bytes")))
                    await writer.drain()
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                writer.write(encode(await self._answer(line, peer)))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    async def _answer(self, line: bytes, peer: Peer) -> dict:
        try:
            op, args = decode_request(line)
        except AdminError as error:
            return failure(str(error))
        spec = OPERATIONS.get(op)
        audited = spec is not None and not spec.reads_only
        try:
            result = await self.operations.dispatch(op, args)
        except AdminError as error:
            if audited:
                log_change(peer, op, args, f"refused: {error}")
            return failure(str(error))
        except Exception as error:  # noqa: BLE001 - one bad request must not stop the daemon
            log.exception("control request failed")
            if audited:
                log_change(peer, op, args, f"failed: {type(error).__name__}")
            return failure(f"internal error: {type(error).__name__}: {error}")
        if audited:
            log_change(peer, op, args, "done")
        return success(result)
