"""Applies a validated configuration change to the running daemon: storage, targets, portals.

Theory of operation
-------------------
Every admin change produces a complete new ``DaemonConfig`` (validated by ``parse_config``);
``LiveState.apply(old, new)`` makes the running objects match it in two phases:

1. *prepare* -- everything that can fail: refuse changes that are not safe live (a block size
   change), open new or changed storage, build new logical units, bind new portals. On any
   failure all of it is undone and nothing the initiators see has changed;
2. *commit* -- what cannot fail: swap backends into existing logical units (resize, read-only),
   map and unmap LUNs (REPORTED LUNS DATA HAS CHANGED for the nexuses that can see the target),
   publish targets and their ACL/CHAP settings to the login path, end the sessions the new
   settings would not admit (``withdrawn_admission``: target deleted, ACL deleted, demo mode
   turned off, CHAP credentials changed) and those whose LUN mask changed (an ACL's mapped
   LUNs, ``lun_masking.lun_map_of``: a session keeps the map it logged in with, so it logs in
   again to get the new one), close what is no longer used.

``reopen_storage`` is the way out of a storage object's write-back failed state
(docs/errors.md): fresh files under the same logical unit, and the state cleared.

Everything runs on the daemon's event loop, between commands (the core is single-threaded),
so no command ever sees half a change.

It uses the live-configuration APIs of the server (``LiveFrontend`` in odxtarget/frontend.py:
``set_target``, ``remove_target``, ``add_portal``, ``remove_portal``, its session registry) and of the core (``LogicalUnit.replace_backend``,
``ScsiTarget.add_lun``/``remove_lun``). docs/admin.md, "Live changes", lists what applies to
existing sessions and what only to new ones.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from odxtarget.admin.protocol import AdminError
from odxtarget.backends import StorageBackend, open_backend
from odxtarget.config import ChapConfig, DaemonConfig, PortalConfig, StorageObjectConfig, TargetConfig
from odxtarget.daemon import DaemonError
from odxtarget.frontend import LiveFrontend, Portal
from odxtarget.scsi.constants import Ascq
from odxtarget.scsi.lu import WriteBackFailure
from odxtarget.storage.extents import FileExtentBackend
from odxtarget.transport.iscsi.discovery import matching_acl
from odxtarget.transport.iscsi.lun_masking import lun_map_of

if TYPE_CHECKING:
    from odxtarget.admin.odx import OdxView
    from odxtarget.daemon import Daemon
    from odxtarget.scsi.lu import LogicalUnit
    from odxtarget.scsi.target import ScsiTarget

log = logging.getLogger("odxtarget.admin")


def _storage_changed(old: StorageObjectConfig, new: StorageObjectConfig) -> bool:
    """True when the backend must be reopened (size, read-only, files, device or image changed)."""
    return ((old.size, old.read_only, old.extents, old.rbd, old.block)
            != (new.size, new.read_only, new.extents, new.rbd, new.block))


def _credentials(target: TargetConfig, initiator: str) -> ChapConfig | None:
    """The CHAP credentials a login of ``initiator`` must pass: its ACL's own, else the
    target's (docs/configuration.md, "ACLs")."""
    acl = matching_acl(target, initiator)
    return acl.chap if acl is not None and acl.chap is not None else target.chap


def withdrawn_admission(before: TargetConfig, after: TargetConfig, initiator: str) -> str | None:
    """Why a session ``initiator`` opened under ``before`` must end under ``after``, or None
    when ``after`` would still admit it with the credentials it authenticated with."""
    if not after.demo_mode and matching_acl(after, initiator) is None:
        if matching_acl(before, initiator) is not None:
            return "ACL deleted by the administrator"
        return "demo mode turned off and no ACL names the initiator"
    if _credentials(before, initiator) != _credentials(after, initiator):
        return "CHAP credentials changed by the administrator"
    if lun_map_of(before, initiator) != lun_map_of(after, initiator):
        return "its mapped LUNs changed by the administrator"
    return None


class LiveState:
    """The running objects of one ``Daemon``; ``apply`` moves them from one config to another."""

    def __init__(self, daemon: Daemon, odx: OdxView | None = None):
        self.daemon = daemon
        self.odx = odx

    # -- reading --------------------------------------------------------------------------

    @property
    def server(self) -> LiveFrontend | None:
        """The front end, when it is one whose targets and portals change live."""
        server = self.daemon.server
        return server if isinstance(server, LiveFrontend) else None

    def listening(self) -> list[Portal]:
        """Bound (ip, port) pairs, in binding order."""
        server = self.server
        return list(server.addresses) if server is not None else []

    def sessions(self) -> list[dict]:
        server = self.server
        return server.sessions() if server is not None else []

    def scsi_target(self, iqn: str) -> ScsiTarget | None:
        for config, scsi_target in self.daemon.targets:
            if config.iqn == iqn:
                return scsi_target
        return None

    # -- applying -------------------------------------------------------------------------

    async def apply(self, old: DaemonConfig, new: DaemonConfig) -> None:
        """Make the running daemon serve ``new`` instead of ``old``.

        Raises:
            AdminError: the change cannot be made live; nothing has changed.
        """
        if new.frontend == "lio" and (old.targets != new.targets or old.storage_objects != new.storage_objects):
            raise AdminError(
                'frontend "lio": LIO owns targets, portals and LUNs; change the configuration file'
                " (or use targetcli) and restart odxtarget (docs/lio.md)")
        old_objects = {so.name: so for so in old.storage_objects}
        new_objects = {so.name: so for so in new.storage_objects}
        for name, so in new_objects.items():
            before = old_objects.get(name)
            if before is not None and before.block_size != so.block_size:
                raise AdminError(
                    f'storage object "{name}": the block size cannot change while it exists'
                    " (delete it and create it again)"
                )
            if before is not None and before.rbd != so.rbd and (
                    before.rbd is None or so.rbd is None or (before.rbd.pool, before.rbd.image) != (so.rbd.pool, so.rbd.image)):
                # Its reservations live with the image (docs/cluster.md): another image is another LU.
                raise AdminError(
                    f'storage object "{name}": the RBD image behind it cannot change while it exists'
                    " (delete it and create it again)"
                )
        limits = None
        if old.odx != new.odx and self.odx is not None and self.odx.available:
            limits = self.odx.limits_for(new.odx)
        opened: dict[str, StorageBackend] = {}
        created_lus: dict[str, LogicalUnit] = {}
        bound: list[Portal] = []
        try:
            for name, so in new_objects.items():
                before = old_objects.get(name)
                if before is None or _storage_changed(before, so):
                    try:
                        if before is None and so.read_only and so.extents:  # create the sparse files first
                            FileExtentBackend(so.extents, so.size).close()
                        opened[name] = open_backend(so)
                    except (OSError, ValueError) as error:
                        raise AdminError(f'storage object "{name}": {error}') from None
                if before is None:
                    try:
                        created_lus[name] = self.daemon.build_logical_unit(so, opened[name])
                    except ValueError as error:
                        raise AdminError(f'storage object "{name}": {error}') from None
                    if so.rbd is not None:
                        try:
                            await self.daemon.share_reservations(so, created_lus[name], new.targets)
                        except DaemonError as error:
                            raise AdminError(str(error)) from None
            bound = await self._bind_portals(new)
        except BaseException:
            for lu in created_lus.values():
                self.daemon.forget_shared_reservations(lu)
            for backend in opened.values():
                _close_quietly(backend)
            await self._unbind_portals(bound)
            raise
        self._commit(old, new, old_objects, new_objects, opened, created_lus)
        if limits is not None:
            self.odx.use(limits)
            log.info("odx limits now: %s", new.odx.limits_overrides() or "the defaults")
        await self._unbind_portals(self._unused_portals(new))

    def _commit(self, old: DaemonConfig, new: DaemonConfig,
                old_objects: dict[str, StorageObjectConfig], new_objects: dict[str, StorageObjectConfig],
                opened: dict[str, StorageBackend], created_lus: dict[str, LogicalUnit]) -> None:
        daemon = self.daemon
        retired: list[StorageBackend] = []
        for name, backend in opened.items():
            if name in created_lus:
                daemon.backends[name] = backend
                daemon.logical_units[name] = created_lus[name]
                if self.odx is not None:
                    self.odx.logical_unit_attached(created_lus[name])
                continue
            lu = daemon.logical_units[name]
            if self.odx is not None:
                self.odx.storage_replacing(lu)   # no copy uses the old backend's fds after this
            retired.append(daemon.backends[name])
            daemon.backends[name] = backend
            lu.replace_backend(backend, read_only=new_objects[name].read_only)

        old_targets = {t.iqn: t for t in old.targets}
        new_targets = {t.iqn: t for t in new.targets}
        live_targets = {config.iqn: scsi_target for config, scsi_target in daemon.targets}
        for iqn in old_targets.keys() - new_targets.keys():
            self._terminate_sessions(iqn, None, "target deleted by the administrator")
            if self.server is not None:
                self.server.remove_target(iqn)
            live_targets.pop(iqn, None)
        updated: list[tuple[TargetConfig, ScsiTarget]] = []
        for target in new.targets:
            scsi_target = live_targets.get(target.iqn)
            if scsi_target is None:
                scsi_target = daemon.build_scsi_target(target)
            else:
                self._update_luns(old_targets[target.iqn], target, scsi_target)
                scsi_target.port_groups = tuple(target.target_port_groups())
                self._end_sessions_no_longer_admitted(old_targets[target.iqn], target)
            if self.server is not None:
                self.server.set_target(self._with_bound_ports(target), scsi_target)
            updated.append((target, scsi_target))
        daemon.targets = updated

        for name in old_objects.keys() - new_objects.keys():
            lu = daemon.logical_units.pop(name, None)
            if lu is not None:
                daemon.forget_shared_reservations(lu)
                if self.odx is not None:
                    self.odx.logical_unit_detached(lu)
            backend = daemon.backends.pop(name, None)
            if backend is not None:
                retired.append(backend)
        for backend in retired:
            _retire(backend)

    def _update_luns(self, before: TargetConfig, after: TargetConfig, scsi_target: ScsiTarget) -> None:
        old_map = {m.lun: m.storage_object for m in before.luns}
        new_map = {m.lun: m.storage_object for m in after.luns}
        if old_map == new_map:
            return
        for lun, name in old_map.items():
            if new_map.get(lun) != name:
                scsi_target.remove_lun(lun)
        for lun, name in new_map.items():
            if old_map.get(lun) != name:
                scsi_target.add_lun(lun, self.daemon.logical_units[name])
        _report_luns_changed(scsi_target)

    def _terminate_sessions(self, iqn: str, initiator: str | None, reason: str) -> None:
        server = self.server
        if server is None:
            return
        registry = server.registry
        for session in list(registry.sessions()):
            if session.target_name != iqn:
                continue
            if initiator is not None and session.initiator_name != initiator:
                continue
            _log_ending(session.target_name, session.initiator_name, session.tsih, reason)
            registry.terminate(session, reason)

    def _end_sessions_no_longer_admitted(self, before: TargetConfig, after: TargetConfig) -> None:
        """A session lives on what admitted it at login: when ``after`` would refuse that login
        (or ask other CHAP credentials, or show other mapped LUNs), the session ends
        (docs/admin.md, "Live changes")."""
        masked = any(acl.mapped_luns is not None for acl in (*before.acls, *after.acls))
        if ((before.demo_mode, before.chap, before.acls) == (after.demo_mode, after.chap, after.acls)
                and not (masked and before.luns != after.luns)):
            return
        server = self.server
        if server is None:
            return
        registry = server.registry
        for session in list(registry.sessions()):
            if session.target_name != after.iqn or session.closed:
                continue
            reason = withdrawn_admission(before, after, session.initiator_name)
            if reason is not None:
                _log_ending(after.iqn, session.initiator_name, session.tsih, reason)
                registry.terminate(session, reason)

    # -- storage ------------------------------------------------------------------------------

    def reopen_storage(self, so: StorageObjectConfig) -> WriteBackFailure | None:
        """Open the storage object's files afresh under its logical unit and clear its
        write-back failed state; returns the failure that was cleared (docs/errors.md).

        Raises:
            AdminError: the files cannot be opened; nothing has changed.
        """
        daemon = self.daemon
        lu = daemon.logical_units.get(so.name)
        if lu is None:
            raise AdminError(f'storage object "{so.name}" is not running')
        try:
            backend = open_backend(so)
        except (OSError, ValueError) as error:
            raise AdminError(f'storage object "{so.name}": {error}') from None
        retired = daemon.backends.get(so.name)
        if self.odx is not None:
            self.odx.storage_replacing(lu)       # no copy uses the old backend's fds after this
        daemon.backends[so.name] = backend
        lu.replace_backend(backend, read_only=so.read_only)
        cleared = lu.clear_write_back_failure()
        log.warning('storage object "%s": files reopened by the administrator', so.name)
        if retired is not None:
            if cleared is None and retired.write_back_error is not None:
                log.warning('storage object "%s": its files had a failed sync (%s); data written before it'
                            " may be lost", so.name, retired.write_back_error)
            _retire(retired)
        return cleared

    # -- portals ----------------------------------------------------------------------------

    def _with_bound_ports(self, target: TargetConfig) -> TargetConfig:
        """Port 0 means "any free port": publish the port the server really bound."""
        if not any(p.port == 0 for p in target.portals):
            return target
        real = {}
        for ip, port in self.listening():
            real.setdefault(ip, port)
        portals = [PortalConfig(p.ip, real.get(p.ip, 0)) if p.port == 0 else p for p in target.portals]
        return replace(target, portals=portals)

    async def _bind_portals(self, config: DaemonConfig) -> list[Portal]:
        server = self.server
        if server is None:
            return []
        listening = set(self.listening())
        wanted: dict[Portal, int] = {}
        for target in config.targets:
            for portal in target.portals:
                if portal.port == 0 and any(ip == portal.ip for ip, _ in listening):
                    continue
                wanted.setdefault((portal.ip, portal.port), target.tpgt)
        bound: list[Portal] = []
        try:
            for (ip, port), tpgt in wanted.items():
                if (ip, port) in listening:
                    continue
                try:
                    await server.add_portal(ip, port, tpgt)
                except OSError as error:
                    raise AdminError(
                        f"cannot listen on {ip}:{port}: {error.strerror or error}"
                    ) from None
                bound.append((ip, port))
        except BaseException:
            await self._unbind_portals(bound)
            raise
        return bound

    def _unused_portals(self, config: DaemonConfig) -> list[Portal]:
        wanted = {(p.ip, p.port) for t in config.targets for p in t.portals}
        wanted_any_port = {p.ip for t in config.targets for p in t.portals if p.port == 0}
        return [(ip, port) for ip, port in self.listening()
                if (ip, port) not in wanted and ip not in wanted_any_port]

    async def _unbind_portals(self, portals: list[Portal]) -> None:
        server = self.server
        for ip, port in portals:
            if server is not None:
                server.remove_portal(ip, port)


def _log_ending(target: str | None, initiator: str, tsih: int, reason: str) -> None:
    log.warning("ending the session of initiator %s on target %s (tsih %d): %s", initiator, target, tsih, reason)


def _retire(backend: StorageBackend) -> None:
    """Close a replaced backend off the event loop: closing flushes its files (``fdatasync``),
    which must not stall the sessions (docs/execution.md); work still running on it keeps its
    files open until it ends (the backend's leases)."""
    asyncio.get_running_loop().run_in_executor(None, _close_quietly, backend)


def _close_quietly(backend: StorageBackend) -> None:
    try:
        backend.close()
    except OSError as error:
        log.error("closing storage: %s", error)


def _report_luns_changed(scsi_target: ScsiTarget) -> None:
    """REPORTED LUNS DATA HAS CHANGED (3Fh/0Eh, SPC-4 6.33) for everyone using the target."""
    for lu in set(scsi_target.luns.values()):
        lu.establish_unit_attention(Ascq.REPORTED_LUNS_DATA_HAS_CHANGED)
