"""The daemon: turns a DaemonConfig into running objects and runs them until told to stop.

Theory of operation
-------------------
Startup goes from the disk outwards: one backend (``open_backend``) and one LogicalUnit per storage
object (a LogicalUnit mapped by several targets is the same object in each, so unit attentions
and reservations are shared, as SAM-5 wants for one logical unit), then one ScsiTarget per
target, then the iSCSI server over all of them. Shutdown goes the other way: the server stops
taking commands and drains (``shutdown(grace)``), then every backend is closed, which
fdatasyncs its files, so an acknowledged write survives a SIGTERM even with the write cache on.

The SCSI core and the server are reached through ``Factories`` so that the lifecycle can be
tested with stand-ins, and so that ``check-config`` never imports the server at all.

Administration: with ``AdminSettings`` the daemon also serves the control socket
(``odxtarget.admin``) once its targets are up, and closes it first on the way down, so an
admin change never races a half-built or half-stopped daemon. SIGHUP re-reads the config file
and applies it as ``restoreconfig`` does (``odxtarget.admin.reload``).

Under systemd (``odxtarget.systemd``) the service manager hears READY=1 once the portals listen
and the control socket is up, STOPPING=1 on the way down, and watchdog pings from the event
loop in between (docs/deployment.md).

Metrics: with a ``metrics`` section the Prometheus endpoint (``odxtarget.metrics``) listens
first, on its own thread, and reads the daemon's counters at each scrape; it closes last.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from odxtarget.backends import StorageBackend, open_backend
from odxtarget.config import (DaemonConfig, MetricsConfig, PortalConfig, StorageObjectConfig, TargetConfig,
                              format_portal)
from odxtarget.frontend import DEFAULT_SHUTDOWN_GRACE, Frontend
from odxtarget.systemd import ServiceNotifier
from odxtarget.transport.iscsi.limits import IscsiLimits
from odxtarget.transport.workers import StorageWorkers

if TYPE_CHECKING:
    from odxtarget.cluster.gateway import ClusterGateway
    from odxtarget.metrics import MetricsEndpoint
    from odxtarget.scsi.lu import LogicalUnit

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Re-read the config file (docs/deployment.md, "Reloading the configuration").
RELOAD_SIGNAL = signal.SIGHUP
#: How often idle tokens expire and stale copy results go.
COPY_HOUSEKEEPING_SECONDS = 1.0


class DaemonError(Exception):
    """A failure the operator can fix (bad storage path, port in use); printed as one line."""


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """Where the control socket listens (None: no control socket), and the file ``saveconfig``
    writes and SIGHUP re-reads (None: neither)."""

    control_socket: str | None
    config_path: str | None = None


#: The ``AdminSettings`` ``run`` uses when none are passed: ``odxtarget serve`` sets them around
#: its ``run(config)`` call, which keeps ``run``'s one-argument form for callers and tests.
ADMIN_SETTINGS: contextvars.ContextVar[AdminSettings | None] = contextvars.ContextVar(
    "odxtarget_admin_settings", default=None)


@dataclass(slots=True)
class Factories:
    """How the daemon builds the layers it does not own."""

    logical_unit: Callable[[StorageObjectConfig, StorageBackend], LogicalUnit]
    #: Builds a SCSI target: its name, LUNs and target port groups.
    scsi_target: Callable[[str, dict[int, Any], tuple[int, ...]], Any]
    #: Builds the native iSCSI server over the targets, bounded by the config's ``iscsi`` limits.
    server: Callable[[list[tuple[TargetConfig, Any]], IscsiLimits], Frontend]
    #: Builds the daemon-wide ODX copy manager (None: no third-party copy).
    copy_manager: Callable[[DaemonConfig], Any] | None = None
    #: Builds the LIO front end (``"frontend": "lio"``) over the logical units by storage
    #: object name; it replaces ``server`` (None: the LIO front end is not available).
    lio_frontend: Callable[[DaemonConfig, dict[str, Any]], Frontend] | None = None


def default_factories() -> Factories:
    """The real SCSI core and native iSCSI server (imported only when a daemon is built)."""
    from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
    from odxtarget.scsi.target import ScsiTarget
    from odxtarget.transport.iscsi.server import IscsiServer

    def logical_unit(so: StorageObjectConfig, backend: StorageBackend) -> LogicalUnit:
        return LogicalUnit(LogicalUnitConfig(
            name=so.name, backend=backend, block_size=so.block_size, read_only=so.read_only,
            serial=so.serial, wwn=so.wwn, write_cache=so.write_cache,
            physical_block_size=so.physical_block_size, removable=so.removable,
        ))

    def scsi_target(name: str, luns: dict[int, Any], port_groups: tuple[int, ...]) -> Any:
        return ScsiTarget(name, luns, port_groups)

    def server(targets: list[tuple[TargetConfig, Any]], limits: IscsiLimits) -> Frontend:
        return IscsiServer(targets, limits=limits)

    def copy_manager(config: DaemonConfig) -> Any:
        from odxtarget.copy import CopyLimits, CopyManager

        try:
            os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
        except OSError as error:
            raise DaemonError(f"state directory {config.state_dir}: {error.strerror or error}") from None
        try:
            limits = CopyLimits(**config.odx.limits_overrides())
        except ValueError as error:
            raise DaemonError(f"odx: {error}") from None
        manager = CopyManager(config.state_dir, limits)
        removed = manager.startup_cleanup()
        if removed:
            log.info("removed %d ROD file(s) left behind by an earlier run", removed)
        return manager

    def lio_frontend(config: DaemonConfig, logical_units: dict[str, Any]) -> Frontend:
        from odxtarget.transport.tcmu.frontend import LioFrontend

        return LioFrontend(config, logical_units)

    return Factories(logical_unit, scsi_target, server, copy_manager, lio_frontend)


class Daemon:
    """Owns every backend, logical unit, target and the server of one configuration."""

    def __init__(self, config: DaemonConfig, factories: Factories | None = None):
        if config.frontend not in ("native", "lio"):
            raise DaemonError(f'frontend "{config.frontend}" is not implemented')
        self.config = config
        self._factories = factories
        self.backends: dict[str, StorageBackend] = {}
        self.logical_units: dict[str, LogicalUnit] = {}
        self.targets: list[tuple[TargetConfig, Any]] = []
        self.server: Frontend | None = None
        self.copy_manager: Any = None
        self._copy_pump: asyncio.Task | None = None
        #: The workers background copies run on (docs/odx.md, "How copies run").
        self._copy_workers: StorageWorkers | None = None
        #: The RADOS side of RBD-backed logical units' reservations (docs/cluster.md).
        self._cluster: ClusterGateway | None = None

    def open_storage(self) -> None:
        """Open (creating sparse files as needed) every storage object's backend and LU.

        Raises:
            DaemonError: naming the storage object and file; nothing stays open.
        """
        factories = self._get_factories()
        try:
            for so in self.config.storage_objects:
                try:
                    backend = open_backend(so)
                except (OSError, ValueError) as error:
                    raise DaemonError(f'storage object "{so.name}": {error}') from None
                self.backends[so.name] = backend
                try:
                    self.logical_units[so.name] = self.build_logical_unit(so, backend)
                except ValueError as error:
                    raise DaemonError(f'storage object "{so.name}": {error}') from None
            if factories.copy_manager is not None:
                self.copy_manager = factories.copy_manager(self.config)
                for lu in self.logical_units.values():
                    self.copy_manager.attach(lu)
        except BaseException:
            self.close_storage()
            raise

    def build_logical_unit(self, so: StorageObjectConfig, backend: StorageBackend) -> LogicalUnit:
        """A logical unit over ``backend`` with its persisted reservations (APTPL) restored:
        at start-up and for storage objects created live alike."""
        lu = self._get_factories().logical_unit(so, backend)
        if so.rbd is None:      # an RBD image's reservations live in RADOS (_share_reservations)
            restore_reservations(lu, self.config.state_dir)
        return lu

    def build_scsi_target(self, target: TargetConfig) -> Any:
        """The SCSI target device of ``target`` over the running logical units it maps."""
        return self._get_factories().scsi_target(
            target.iqn, {m.lun: self.logical_units[m.storage_object] for m in target.luns},
            tuple(target.target_port_groups()))

    def build_targets(self) -> list[tuple[TargetConfig, Any]]:
        self.targets = [(target, self.build_scsi_target(target)) for target in self.config.targets]
        return self.targets

    async def start(self) -> None:
        """Open storage, build targets, start listening; log what is served where.

        Raises:
            DaemonError: storage cannot be opened or a portal cannot be bound.
        """
        self.open_storage()
        try:
            if self.config.frontend == "lio":
                await self._start_lio_frontend()
            else:
                self.build_targets()
                await self._share_reservations()
                self.server = self._get_factories().server(self.targets, self.config.iscsi)
                self._grant_native_copy_access()
                try:
                    await self.server.start()
                except OSError as error:
                    raise DaemonError(
                        f"cannot start the iSCSI server: {error.strerror or error}"
                    ) from None
        except BaseException:
            self.server = None
            self.close_storage()
            raise
        if self.copy_manager is not None:
            # Copy steps are plain calls (copy_file_range, FICLONERANGE, read/write): no rings.
            self._copy_workers = StorageWorkers(asyncio.get_running_loop(), io_uring=False)
            self.copy_manager.use_workers(self._copy_workers)
            self._copy_pump = asyncio.create_task(self._pump_copy_work(), name="odx-copy-pump")
        served = self.server.addresses if self.server is not None else []
        addresses: list = list(served) or [portal for target in self.config.targets for portal in target.portals]
        for address in dict.fromkeys(format_address(a) for a in addresses):
            log.info("listening on %s", address)
        for line in summary_lines(self.config):
            log.info("%s", line)
        for line in unauthenticated_write_warnings(self.config):
            log.warning("%s", line)

    async def _start_lio_frontend(self) -> None:
        """Kernel LIO speaks iSCSI; we serve its ``user:`` backstores over TCMU (docs/lio.md).
        The SCSI core sees one LU per TCMU device, so no ScsiTargets are built here."""
        build = self._get_factories().lio_frontend
        if build is None:
            raise DaemonError('frontend "lio" is not available in this build')
        try:
            self.server = build(self.config, self.logical_units)
        except ImportError as error:
            raise DaemonError(f"the LIO front end needs rtslib-fb and pyudev: {error}") from None
        self._grant_lio_copy_access()
        try:
            await self.server.start()
        except DaemonError:
            raise
        except Exception as error:  # rtslib's RTSLibError, OSError from configfs or uio
            raise DaemonError(f"cannot start the LIO front end: {error}") from None

    async def _share_reservations(self) -> None:
        """Every RBD-backed logical unit keeps its reservations in RADOS, shared with the other
        gateways serving the image (docs/cluster.md), before any initiator reaches it."""
        for so in self.config.storage_objects:
            if so.rbd is not None:
                await self.share_reservations(so, self.logical_units[so.name])

    async def share_reservations(self, so: StorageObjectConfig, lu: LogicalUnit,
                                 targets: list[TargetConfig] | None = None) -> None:
        """Keep the reservations of ``lu`` (an RBD image's) in RADOS: at start-up and for
        storage objects created live (``targets``: the configuration's targets, when it is
        about to change).

        Raises:
            DaemonError: the shared state cannot be reached or read.
        """
        from odxtarget.cluster.gateway import ClusterGateway
        from odxtarget.config import port_group_of

        if self._cluster is None:
            self._cluster = ClusterGateway(asyncio.get_running_loop())

        def targets_mapping_it() -> list[Any]:
            return [scsi_target for target, scsi_target in self.targets
                    if any(m.storage_object == so.name for m in target.luns)]

        # One daemon is one gateway: every TPGT it serves is one of its relative target ports.
        local_ports = frozenset(port_group_of(target.tpgt) for target in targets or self.config.targets)
        try:
            await self._cluster.share_reservations(lu, so.rbd, targets_mapping_it, local_ports)
        except (OSError, ValueError) as error:
            raise DaemonError(f'storage object "{so.name}": shared reservations: {error}') from None

    def forget_shared_reservations(self, lu: LogicalUnit) -> None:
        """A deleted storage object's LU stops following its shared state."""
        if self._cluster is not None:
            self._cluster.forget(lu)

    def _grant_native_copy_access(self) -> None:
        """Copies reach what the initiator could reach through the iSCSI server's targets and
        ACLs, read live from its registry (docs/odx.md, "Access control"). A stand-in server
        leaves the copy manager to the command's own target."""
        from odxtarget.transport.iscsi.server import IscsiServer

        if self.copy_manager is not None and isinstance(self.server, IscsiServer):
            from odxtarget.transport.iscsi.copy_access import IscsiCopyAccess

            self.copy_manager.use_access(IscsiCopyAccess(self.server.registry.entries))

    def _grant_lio_copy_access(self) -> None:
        """Behind LIO, the configured TPGs decide what a copy reaches (docs/lio.md)."""
        from odxtarget.transport.tcmu.frontend import LioFrontend

        if self.copy_manager is not None and isinstance(self.server, LioFrontend):
            from odxtarget.transport.tcmu.copy_access import LioCopyAccess, storage_objects_by_nexus

            self.copy_manager.use_access(LioCopyAccess(self.config.targets,
                                                       storage_objects_by_nexus(self.server.handler)))

    async def stop(self, grace: float = DEFAULT_SHUTDOWN_GRACE) -> None:
        """Stop the server (letting commands drain for ``grace`` seconds), then sync storage."""
        if self._copy_pump is not None:
            self._copy_pump.cancel()
            self._copy_pump = None
        try:
            if self.server is not None:
                server, self.server = self.server, None
                await server.shutdown(grace=grace)
        finally:
            self.close_storage()

    def close_storage(self) -> None:
        """Close every backend (flushing it); log, but do not stop at, a failing one."""
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()
        manager, self.copy_manager = self.copy_manager, None
        if manager is not None:
            manager.close()
        workers, self._copy_workers = self._copy_workers, None
        if workers is not None:
            workers.close()
        backends, self.backends = self.backends, {}
        self.logical_units = {}
        for name, backend in backends.items():
            try:
                backend.close()
            except OSError as error:
                log.error('storage object "%s": %s', name, error)

    async def _pump_copy_work(self) -> None:
        """Let tokens expire and stale copy results go, about once a second. Background
        (IMMED=1) copies run on ``_copy_workers``, not here."""
        while True:
            try:
                self.copy_manager.housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in the bookkeeping must not stop the daemon
                log.exception("copy manager housekeeping failed")
            await asyncio.sleep(COPY_HOUSEKEEPING_SECONDS)

    def _get_factories(self) -> Factories:
        if self._factories is None:
            self._factories = default_factories()
        return self._factories


async def serve(config: DaemonConfig, factories: Factories | None = None,
                *, install_signal_handlers: bool = True, admin: AdminSettings | None = None,
                notifier: ServiceNotifier | None = None) -> None:
    """Run a daemon until SIGTERM or SIGINT; a second signal stops without waiting.

    With ``admin``, the control socket is served while the daemon runs, and SIGHUP reloads
    ``admin.config_path``. ``notifier`` (default: from the environment) tells systemd.
    """
    daemon = Daemon(config, factories)
    control = None
    reloader = None
    notifier = notifier if notifier is not None else ServiceNotifier()
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    main_task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if not stop_requested.is_set():
            log.info("%s received: shutting down (up to %.0f s)", name, DEFAULT_SHUTDOWN_GRACE)
            notifier.stopping(f"{name} received: shutting down")
            stop_requested.set()
        else:
            log.warning("%s received again: stopping now", name)
            main_task.cancel()

    def on_reload(signum: int) -> None:
        if stop_requested.is_set():
            log.warning("SIGHUP received while stopping: not reloaded")
        elif reloader is None:
            log.warning("SIGHUP received before start-up completed, or without a config file: not reloaded")
        else:
            reloader.request()

    installed = []
    if install_signal_handlers:
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        loop.add_signal_handler(RELOAD_SIGNAL, on_reload, RELOAD_SIGNAL)
        installed.append(RELOAD_SIGNAL)
    metrics = None
    try:
        if config.metrics is not None:
            metrics = _start_metrics(daemon, config.metrics)
        await daemon.start()
        if admin is not None:
            try:
                control, reloader = await _start_admin(daemon, admin, notifier)
            except DaemonError:
                await daemon.stop(grace=0)
                raise
        notifier.ready(ready_status(daemon))
        notifier.start_watchdog()
        await stop_requested.wait()
        if reloader is not None:
            await reloader.close()
        if control is not None:
            await control.close()
            control = None
        await daemon.stop()
        log.info("stopped")
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        if control is not None:
            await control.close()
        notifier.close()
        if metrics is not None:
            await asyncio.to_thread(metrics.close)
        daemon.close_storage()


def _start_metrics(daemon: Daemon, settings: MetricsConfig) -> MetricsEndpoint:
    """Serve the Prometheus endpoint (docs/metrics.md) before anything else starts, so that an
    address in use stops the daemon before it opens storage.

    Raises:
        DaemonError: the endpoint cannot listen.
    """
    from odxtarget.metrics import MetricsEndpointError, start_endpoint

    try:
        return start_endpoint(daemon, settings)
    except MetricsEndpointError as error:
        raise DaemonError(str(error)) from None


async def _start_admin(daemon: Daemon, admin: AdminSettings, notifier: ServiceNotifier):
    """The admin operations on ``daemon``: served on the control socket (when one is set),
    and run by SIGHUP (``ConfigReloader``, when there is a config file).

    Raises:
        DaemonError: the socket cannot be created (or another daemon owns it).
    """
    from odxtarget.admin.ops import AdminOperations
    from odxtarget.admin.reload import ConfigReloader
    from odxtarget.admin.server import ControlServer, ControlSocketError

    operations = AdminOperations(daemon, admin.config_path)
    reloader = ConfigReloader(operations, notifier, lambda: ready_status(daemon)) if admin.config_path else None
    if admin.control_socket is None:
        return None, reloader
    control = ControlServer(operations, admin.control_socket)
    try:
        await control.start()
    except ControlSocketError as error:
        raise DaemonError(str(error)) from None
    return control, reloader


def ready_status(daemon: Daemon) -> str:
    """The one line ``systemctl status`` shows while the daemon serves."""
    served = daemon.server.addresses if daemon.server is not None else []
    portals = ", ".join(dict.fromkeys(format_address(a) for a in served)) or "no portals"
    luns = sum(len(target.luns) for target in daemon.config.targets)
    return f"serving {len(daemon.config.targets)} target(s), {luns} LUN(s) on {portals}"


def run(config: DaemonConfig, factories: Factories | None = None, *,
        admin: AdminSettings | None = None) -> None:
    """Blocking entry point for ``odxtarget serve``: picks the event loop, serves, returns
    once stopped. ``admin`` defaults to ``ADMIN_SETTINGS`` (no control socket when unset).

    Raises:
        DaemonError: storage cannot be opened, a portal cannot be bound, or the front end is
            not available.
    """
    if factories is None:
        try:
            from odxtarget.transport.iscsi.server import install_event_loop_policy

            factories = default_factories()
        except ImportError as error:
            raise DaemonError(f"the SCSI core or iSCSI front end is not available: {error}") from None
        install_event_loop_policy()
    try:
        asyncio.run(serve(config, factories, admin=admin if admin is not None else ADMIN_SETTINGS.get()))
    except asyncio.CancelledError:
        log.warning("shutdown was cut short; storage was synced")


def restore_reservations(lu: LogicalUnit, state_dir: str) -> None:
    """Persistent reservations with APTPL live in ``<state_dir>/reservations/<name>.json``
    (SPC-4 5.13.5); read them back before the LU serves its first command."""
    from odxtarget.storage.reservation_file import ReservationFile

    lu.persist_reservations(ReservationFile.for_logical_unit(state_dir, lu.name))


def format_address(address: tuple | PortalConfig | str) -> str:
    """``ip:port`` (``[ip]:port`` for IPv6) from a socket address tuple or a portal."""
    if isinstance(address, PortalConfig):
        return format_portal(address)
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
    else:
        return str(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def summary_lines(config: DaemonConfig) -> list[str]:
    """One line per target and one per LUN, for the startup log and ``check-config``."""
    objects = {so.name: so for so in config.storage_objects}
    lines = []
    for target in config.targets:
        portals = ", ".join(format_address(p) for p in target.portals)
        if target.demo_mode:
            access = "demo mode (any initiator" + (", write-protected)" if target.demo_mode_write_protect else ")")
        else:
            access = f"{len(target.acls)} ACL{'s' if len(target.acls) != 1 else ''}"
        chap = "CHAP" + (" (mutual)" if target.chap and target.chap.mutual_userid else "")
        lines.append(
            f"target {target.iqn} tpgt {target.tpgt} on {portals}: {access}"
            + (f", {chap}" if target.chap else "")
            + f", {len(target.luns)} LUN{'s' if len(target.luns) != 1 else ''}"
        )
        for mapping in sorted(target.luns, key=lambda m: m.lun):
            so = objects[mapping.storage_object]
            files = so.describe_storage()
            lines.append(
                f"  LUN {mapping.lun}: {so.name}, {_human_size(so.size)}"
                f" ({so.size // so.block_size} x {so.block_size}-byte blocks),"
                f" {'read-only' if so.read_only else 'read-write'},"
                f" write cache {'on' if so.write_cache else 'off'}, {files}"
            )
        for acl in target.acls:
            if acl.mapped_luns is not None:   # LUN masking (docs/configuration.md, "ACLs")
                shown = ", ".join(f"{m.mapped_lun}=LUN {m.lun}{' read-only' if m.write_protect else ''}"
                                  for m in acl.mapped_luns) or "none"
                lines.append(f"  ACL {acl.initiator} sees: {shown}")
    return lines


def unauthenticated_write_warnings(config: DaemonConfig) -> list[str]:
    """One line per target and portal where any initiator may write without CHAP, which the
    configuration allowed with ``allow_unauthenticated_writes`` (docs/security.md, "Demo mode")."""
    writable = {so.name for so in config.storage_objects if not so.read_only}
    return [f"target {target.iqn} on {format_portal(portal)}: any initiator may log in without CHAP and"
            " write (allow_unauthenticated_writes is set)"
            for target in config.targets for portal in target.unauthenticated_write_portals(writable)]


def _human_size(size: int) -> str:
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit:
            return f"{size / unit:g} {name}" if size % unit == 0 else f"{size / unit:.2f} {name}"
    return f"{size} bytes"
