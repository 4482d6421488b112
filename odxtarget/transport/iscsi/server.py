"""The asyncio glue around ``IscsiConnection``: listening sockets, one protocol per TCP
connection, keepalive ticks and graceful shutdown (hypercorn's TCPServer/worker_serve shape).

This is the only iSCSI module that does I/O. Each connection is an ``asyncio.BufferedProtocol``
(not a StreamReader task): the socket reads into the connection's ``ReceiveBuffer``,
``buffer_updated`` feeds the sans-IO connection and writes what it produced with one
``writelines`` call, so a queue-depth-32 burst of PDUs costs one pass through the event loop,
not one task wake-up per read.

Bounds (docs/security.md): a new connection is admitted or closed at once by the registry's
``Admission`` (per-address and daemon-wide counts, failed-login throttling). Backpressure:
the transport's write buffer high-water mark is the connection's ``max_pending_send_bytes``;
while the transport holds more (``pause_writing``), or while the connection has PDUs it did
not handle because its output was full (``input_stalled``), we do not read from the socket,
and once the peer has taken the output the queued PDUs are handled (``IscsiConnection.resume``).
A peer that never reads its responses therefore holds at most that much of our memory.

Storage never blocks the loop (docs/execution.md): a command the core cannot answer at once
is a ``Pending`` that the server's ``CommandDriver`` runs on ``StorageWorkers`` threads; its
answer comes back on the loop, in any order, and the connection's ``on_output`` hook flushes
it. A bug in one connection is logged and closes that connection only.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time

from odxtarget.config import TargetConfig
from odxtarget.scsi.types import TargetPort
from odxtarget.transport.iscsi.connection import DEFAULT_TARGET_MRDSL, ConnectionState, IscsiConnection, LoginFactory
from odxtarget.transport.iscsi.limits import IscsiLimits
from odxtarget.transport.iscsi.session import SessionRegistry
from odxtarget.transport.receive_buffer import LARGE_RECEIVE_BYTES, SMALL_RECEIVE_BYTES, ReceiveBuffer
from odxtarget.transport.workers import CommandDriver, StorageWorkers

log = logging.getLogger("odxtarget.iscsi")

# Keepalive clock resolution: how often idle connections are looked at.
TICK_INTERVAL = 1.0
# How often shutdown re-checks whether in-flight commands have drained.
SHUTDOWN_POLL_INTERVAL = 0.05
#: File descriptors kept for storage, the control socket and logs beyond the connections.
RESERVED_DESCRIPTORS = 256


def install_event_loop_policy() -> bool:
    """Use uvloop when it is importable (faster transports, writev for ``writelines``)."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def raise_descriptor_limit(connections: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``connections`` + reserve (at most the hard
    limit), so ``max_connections`` is what bounds connections rather than EMFILE at accept.
    Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + RESERVED_DESCRIPTORS
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-file limit to %d: %s", wanted, error)
    if soft < connections + RESERVED_DESCRIPTORS:
        log.warning("open-file limit %d is below max_connections (%d) + %d: raise it (ulimit -n)",
                    soft, connections, RESERVED_DESCRIPTORS)
    return soft


class _ConnectionProtocol(asyncio.BufferedProtocol):
    """Moves bytes between one socket and one ``IscsiConnection``."""

    def __init__(self, server: "IscsiServer", portal_group_tag: int):
        self._server = server
        self._portal_group_tag = portal_group_tag
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.connection: IscsiConnection | None = None
        self.closed = asyncio.Event()
        self._address = ""
        self._writing_paused = False
        self._reading = True
        self._resume_scheduled = False
        self._flush_scheduled = False
        self._receive = ReceiveBuffer()

    # asyncio callbacks -------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        local = transport.get_extra_info("sockname") or (None, None)
        self._address = str(peer[0])
        registry = self._server.registry
        refusal = registry.admission.admit_connection(self._address, self._loop.time())
        if refusal is not None:
            self._server.note_refused(self._address, refusal)
            self._address = ""
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        limits = registry.limits
        transport.set_write_buffer_limits(high=limits.max_pending_send_bytes,
                                          low=limits.max_pending_send_bytes // 4)
        self.connection = IscsiConnection(
            registry, peer=f"{peer[0]}:{peer[1]}", peer_address=self._address, local_address=local[0],
            local_port=local[1], portal_group_tag=self._portal_group_tag, login_factory=self._server.login_factory,
            target_mrdsl=self._server.target_mrdsl, nop_interval=self._server.nop_interval, now=self._loop.time(),
            runner=self._server.driver)
        self.connection.on_terminate = self._terminated
        self.connection.on_output = self._output_ready
        self._server._protocols.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Reads go into the connection's buffer: small until login ends, then large enough
        for a whole Data-Out segment."""
        connection = self.connection
        full_feature = connection is not None and connection.state is ConnectionState.FULL_FEATURE
        return self._receive.writable(LARGE_RECEIVE_BYTES if full_feature else SMALL_RECEIVE_BYTES)

    def buffer_updated(self, nbytes: int) -> None:
        connection = self.connection
        if connection is None:
            return
        try:
            connection.receive_data(self._receive.received(nbytes), self._loop.time())
        except Exception:
            log.exception("initiator at %s: internal error; closing the connection", connection.peer)
            self._fail()
            return
        self.flush()

    def eof_received(self) -> bool:
        if self.connection is not None:
            self.connection.receive_data(b"", self._loop.time())
        return False

    def connection_lost(self, exc) -> None:
        self._receive.release()
        try:
            if self.connection is not None:
                self.connection.connection_lost("connection lost" if exc is None else f"connection lost: {exc}")
        except Exception:
            log.exception("error while tearing down a connection")
        if self._address:
            self._server.registry.admission.connection_closed(self._address)
            self._address = ""
        self._server._protocols.discard(self)
        self.closed.set()

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._resume_input()

    # helpers -------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write what the connection produced; close once it asked for it; read again only
        while the connection can take more input."""
        transport = self.transport
        connection = self.connection
        if transport is None or connection is None or transport.is_closing():
            return
        chunks = connection.data_to_send()
        if chunks:
            if len(chunks) == 1:
                transport.write(chunks[0])
            else:
                transport.writelines(chunks)
        if connection.close_requested:
            transport.close()   # after the buffered output is sent
            return
        connection.send_backlog = transport.get_write_buffer_size()
        self._update_reading()

    def _update_reading(self) -> None:
        transport, connection = self.transport, self.connection
        if transport is None or connection is None or transport.is_closing():
            return
        stalled = connection.input_stalled
        if stalled and not self._writing_paused and not self._resume_scheduled:
            # The transport took the output below its high-water mark: go on with queued PDUs
            # after this callback (not recursively).
            self._resume_scheduled = True
            self._loop.call_soon(self._resume_input)
        want = not stalled and not self._writing_paused
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _resume_input(self) -> None:
        self._resume_scheduled = False
        transport, connection = self.transport, self.connection
        if transport is None or connection is None or transport.is_closing():
            return
        connection.send_backlog = transport.get_write_buffer_size()
        try:
            connection.resume(self._loop.time())
        except Exception:
            log.exception("initiator at %s: internal error; closing the connection", connection.peer)
            self._fail()
            return
        self.flush()

    def tick(self, now: float) -> None:
        try:
            self.connection.on_timer(now)
        except Exception:
            log.exception("initiator at %s: keepalive error; closing the connection", self.connection.peer)
            self._fail()
            return
        self.flush()

    def _output_ready(self) -> None:
        # Commands finish in batches (one loop wake-up per batch of storage completions):
        # one flush after the batch writes all their answers with one writelines.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def _terminated(self) -> None:
        # Called synchronously from inside another connection's processing; close after the
        # current callback so queued output (e.g. a TMF response) goes out first.
        self._loop.call_soon(self.flush)

    def _fail(self) -> None:
        try:
            self.connection.connection_lost("internal error")
        finally:
            if self.transport is not None:
                self.transport.abort()


class IscsiServer:
    """Serves the configured targets on their portals.

    Args:
        targets: each target's configuration and the ``ScsiTarget`` presenting its LUNs.
        nop_interval: seconds of initiator silence before a NOP-In ping (0 disables it).
        login_factory: overrides the login state machine (tests); default ``login.LoginStateMachine``.
        target_mrdsl: the MaxRecvDataSegmentLength we declare.
        limits: what connections, addresses and the daemon may hold (docs/security.md).
        workers: the threads that run storage work (docs/execution.md); by default the server
            starts its own in ``start``.
    """

    def __init__(self, targets: list[tuple[TargetConfig, TargetPort]], *, nop_interval: float = 30.0,
                 login_factory: LoginFactory | None = None, target_mrdsl: int = DEFAULT_TARGET_MRDSL,
                 limits: IscsiLimits | None = None, workers: StorageWorkers | None = None):
        self.registry = SessionRegistry(targets, limits=limits)
        self._workers = workers
        self._own_workers = workers is None
        self.driver: CommandDriver | None = CommandDriver(workers) if workers is not None else None
        self.nop_interval = nop_interval
        self.login_factory = login_factory
        self.target_mrdsl = target_mrdsl
        self._servers: list[asyncio.base_events.Server] = []
        self._protocols: set[_ConnectionProtocol] = set()
        self._ticker: asyncio.Task | None = None
        self._refused: dict[str, tuple[int, str]] = {}     # address -> (connections refused, why)
        # The listen queue holds connections not yet accepted; the kernel caps it (somaxconn).
        # A burst of connects beyond it costs each a SYN retransmission, so it matches the
        # connections the daemon would take.
        self._backlog = min(self.registry.limits.max_connections, socket.SOMAXCONN)

    def note_refused(self, address: str, why: str) -> None:
        """A connection was closed at accept; logged once per address and tick with a count,
        so a flood of connections costs a few log lines, not one each."""
        count, _ = self._refused.get(address, (0, why))
        self._refused[address] = (count + 1, why)

    def _log_refusals(self) -> None:
        for address, (count, why) in self._refused.items():
            log.warning("closed %d new connection(s) from %s at accept: %s", count, address, why)
        self._refused.clear()

    def _portals(self) -> dict[tuple[str, int], int]:
        """Distinct (ip, port) -> TPGT of the first target that lists it."""
        portals: dict[tuple[str, int], int] = {}
        for config, _ in self.registry.entries():
            for portal in config.portals:
                portals.setdefault((portal.ip, portal.port), config.tpgt)
        return portals

    async def start(self) -> None:
        """Bind every distinct portal. Raises OSError (after closing what was bound) on failure."""
        raise_descriptor_limit(self.registry.limits.max_connections)
        loop = asyncio.get_running_loop()
        if self._workers is None:
            self._workers = StorageWorkers(loop)
            self.driver = CommandDriver(self._workers)
        bound: dict[tuple[str, int], int] = {}
        try:
            for (ip, port), tpgt in self._portals().items():
                server = await loop.create_server(lambda tpgt=tpgt: _ConnectionProtocol(self, tpgt), host=ip,
                                                  port=port, reuse_address=True, backlog=self._backlog)
                self._servers.append(server)
                if port == 0 and server.sockets:
                    bound[(ip, port)] = server.sockets[0].getsockname()[1]
                log.debug("iSCSI portal listening on %s", ", ".join(f"{a[0]}:{a[1]}" for a in
                                                                  (s.getsockname() for s in server.sockets)))
        except OSError:
            for server in self._servers:
                server.close()
            self._servers.clear()
            raise
        if bound:
            self.registry.use_bound_ports(bound)
        self._ticker = asyncio.ensure_future(self._tick_forever())

    def set_target(self, config: TargetConfig, scsi_target: TargetPort) -> None:
        """Publish a new or changed target to logins and discovery (live configuration)."""
        self.registry.set_target(config, scsi_target)

    def remove_target(self, target_name: str) -> None:
        self.registry.remove_target(target_name)

    async def add_portal(self, ip: str, port: int, tpgt: int) -> None:
        """Start listening on one more portal. Raises OSError when it cannot be bound."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _ConnectionProtocol(self, tpgt), host=ip, port=port,
                                          reuse_address=True, backlog=self._backlog)
        self._servers.append(server)
        log.info("iSCSI portal listening on %s:%d (added live)", ip, port)

    def remove_portal(self, ip: str, port: int) -> None:
        """Stop listening on a portal; sessions that came in through it keep running.

        Does not wait for ``wait_closed``: uvloop's waits for the portal's sessions too.
        """
        for server in list(self._servers):
            if (ip, port) in [sock.getsockname()[:2] for sock in server.sockets]:
                server.close()
                self._servers.remove(server)
                log.info("iSCSI portal %s:%d closed (removed live)", ip, port)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (ip, port) pairs (the real port when the configuration said 0)."""
        out = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((name[0], name[1]))
        return out

    def sessions(self) -> list[dict]:
        """Live logged-in sessions: initiator, isid, tsih, target, peer, digests."""
        return [protocol.connection.describe() for protocol in list(self._protocols)
                if protocol.connection is not None and protocol.connection.session is not None
                and not protocol.connection.session.closed]

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            now = loop.time()
            for protocol in list(self._protocols):
                if protocol.connection is not None:
                    protocol.tick(now)
            if self._refused:
                self._log_refusals()

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, let commands in flight finish, then log every session out.

        "In flight" means waiting for data-out or for storage work; once none is (or ``grace``
        has passed) each session is closed as if logged out (``nexus_logged_out``), its
        socket closed after its queued responses, and the storage work still running is
        awaited, so the daemon closes no backend under a worker.
        """
        for server in self._servers:
            server.close()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.connection is not None and p.connection.busy
                                                  for p in self._protocols):
            await asyncio.sleep(SHUTDOWN_POLL_INTERVAL)
        protocols = list(self._protocols)
        for protocol in protocols:
            connection = protocol.connection
            if connection is not None and connection.session is not None:
                self.registry.close(connection.session, logged_out=True, reason="target shutting down")
            if connection is not None:
                connection.close_requested = True
                connection.state = connection.state.__class__.CLOSED
            protocol.flush()
            if protocol.transport is not None and not protocol.transport.is_closing():
                protocol.transport.close()
        if protocols:
            await asyncio.wait([asyncio.ensure_future(p.closed.wait()) for p in protocols],
                               timeout=max(0.1, deadline - time.monotonic()))
        for protocol in list(self._protocols):
            if protocol.transport is not None:
                protocol.transport.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._workers is not None and self._own_workers:
            await self._workers.drain(max(0.1, deadline - time.monotonic()))
            self._workers.close()
