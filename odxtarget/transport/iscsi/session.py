"""iSCSI sessions: the CmdSN window, the session registry (TSIH, reinstatement) and the
target directory the login state machine consults.

Theory of operation
-------------------
A ``SessionRegistry`` is shared by every connection of one ``IscsiServer``. It knows the
configured targets (``TargetDirectory`` for login and SendTargets), hands out TSIHs (RFC 7143
11.12.6: unique, never 0) and finds the live session a new login would reinstate (RFC 7143
6.3.5: same initiator name, ISID and target). A ``Session`` owns the command numbering
(``CommandWindow``: ExpCmdSN/MaxCmdSN, RFC 7143 4.2.2.1), the I_T nexus handed to the
SCSI core and the SCSI target port it uses: the target's, or the masked view an ACL's mapped
LUNs give its initiator (``lun_masking``). MaxConnections is 1, so a session has exactly one connection; tasks live there.
The registry also holds the server's ``Admission`` (connections, sessions and failed logins
counted per source address) and gives every session a window of
``IscsiLimits.max_tasks_per_connection`` commands.

Nothing here does I/O. Closing a session calls back into its connection
(``Connection.terminate``), which asks its runner to drop the socket.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Protocol

from odxtarget.config import TargetConfig, port_group_of
from odxtarget.scsi.types import ItNexus, TargetPort
from odxtarget.transport.iscsi.admission import Admission
from odxtarget.transport.iscsi.discovery import session_write_protected
from odxtarget.transport.iscsi.limits import IscsiLimits
from odxtarget.transport.iscsi.lun_masking import session_target
from odxtarget.transport.iscsi.ordering import CommandWindow

from odxtarget.transport.iscsi.negotiation import SessionParameters
from odxtarget.transport.iscsi.task_table import TaskTable


class SessionConnection(Protocol):
    """What the registry needs of a session's connection (``connection.IscsiConnection``)."""

    tasks: TaskTable

    def terminate(self, reason: str) -> None: ...

log = logging.getLogger("odxtarget.iscsi")

MAX_TSIH = 0xFFFF


@dataclass(slots=True, eq=False)
class Session:
    """One iSCSI session (normal or discovery) as the target sees it."""

    tsih: int
    session_type: str                   # "Normal" or "Discovery"
    initiator_name: str
    isid: bytes
    target_name: str | None
    target_config: TargetConfig | None
    scsi_target: TargetPort | None      # None for discovery
    nexus: ItNexus | None
    parameters: SessionParameters
    window: CommandWindow
    initiator_alias: str | None = None
    connection: SessionConnection | None = None
    closed: bool = False
    peer_address: str = ""              # the source IP address admission counts it under
    #: Every LUN is read-only to this session (``discovery.session_write_protected``).
    write_protected: bool = False

    @property
    def identity(self) -> tuple[str, bytes, str | None]:
        return (self.initiator_name, self.isid, self.target_name)


def make_nexus(initiator_name: str, isid: bytes, target_name: str, tpgt: int) -> ItNexus:
    """The SCSI port names of RFC 7143 10.1.1 (``iqn,i,0xISID`` / ``iqn,t,0xTPGT``); the portal
    group is the target port, relative port and target port group (``port_group_of``)."""
    port = port_group_of(tpgt)
    return ItNexus(initiator_port=f"{initiator_name},i,0x{isid.hex()}",
                   target_port=f"{target_name},t,0x{tpgt:04x}",
                   relative_target_port_id=port, target_port_group=port)


class SessionRegistry:
    """Targets, TSIHs and live sessions of one server (also the login's ``TargetDirectory``)."""

    def __init__(self, targets: list[tuple[TargetConfig, TargetPort]] | None = None, *,
                 limits: IscsiLimits | None = None):
        self._targets: dict[str, tuple[TargetConfig, TargetPort]] = {}
        self._by_tsih: dict[int, Session] = {}
        for config, scsi_target in targets or []:
            self.set_target(config, scsi_target)
        self.limits = limits if limits is not None else IscsiLimits()
        self.command_window = self.limits.max_tasks_per_connection
        self.admission = Admission(self.limits)
        self._next_tsih = 1

    # TargetDirectory -----------------------------------------------------------------------
    def lookup(self, target_name: str) -> TargetConfig | None:
        entry = self._targets.get(target_name)
        return entry[0] if entry else None

    def targets(self) -> list[TargetConfig]:
        return [config for config, _ in self._targets.values()]

    def entries(self) -> list[tuple[TargetConfig, TargetPort]]:
        """Every published (configuration, SCSI target) pair."""
        return list(self._targets.values())

    def set_target(self, config: TargetConfig, scsi_target: TargetPort) -> None:
        """Publish a new or changed target: logins and discovery see it from now on."""
        self._targets[config.iqn] = (config, scsi_target)
        scsi_target.set_task_aborter(self.abort_tasks_of)
        for session in self._by_tsih.values():
            if session.target_name == config.iqn and session.nexus is not None:
                session.target_config = config
                session.write_protected = session_write_protected(config, session.initiator_name)

    def remove_target(self, target_name: str) -> None:
        """Unpublish a target (its sessions are the caller's business)."""
        self._targets.pop(target_name, None)

    def use_bound_ports(self, bound: dict[tuple[str, int], int]) -> None:
        """Report the real port of portals configured with port 0 ((ip, 0) -> port), e.g. in SendTargets."""
        for name, (config, scsi_target) in list(self._targets.items()):
            portals = [replace(portal, port=bound.get((portal.ip, portal.port), portal.port))
                       for portal in config.portals]
            self._targets[name] = (replace(config, portals=portals), scsi_target)

    def portal_group_tag(self, target_name: str, default: int = 1) -> int:
        entry = self._targets.get(target_name)
        return entry[0].tpgt if entry else default

    def scsi_target(self, target_name: str) -> TargetPort | None:
        entry = self._targets.get(target_name)
        return entry[1] if entry else None

    def abort_tasks_of(self, lu: object, nexuses: frozenset[ItNexus]) -> int:
        """PREEMPT AND ABORT (SPC-4 5.13.11.5): the tasks the sessions of ``nexuses`` hold for
        ``lu`` (waiting for data-out or their CmdSN) end without a SCSI Response, like an ABORT
        TASK SET on their behalf. The LU may sit at a different LUN in each session's target."""
        aborted = 0
        for session in list(self._by_tsih.values()):
            connection, scsi_target = session.connection, session.scsi_target
            if session.nexus in nexuses and connection is not None and scsi_target is not None:
                aborted += connection.tasks.abort(lambda task: scsi_target.logical_unit(task.lun) is lu)
        if aborted:
            log.info("PREEMPT AND ABORT: %d queued task(s) of %d I_T nexus(es) aborted", aborted, len(nexuses))
        return aborted

    # sessions --------------------------------------------------------------------------------
    def sessions(self) -> list[Session]:
        return list(self._by_tsih.values())

    def by_tsih(self, tsih: int) -> Session | None:
        return self._by_tsih.get(tsih)

    def by_identity(self, initiator_name: str, isid: bytes, target_name: str | None) -> Session | None:
        key = (initiator_name, bytes(isid), target_name)
        for session in self._by_tsih.values():
            if session.identity == key and not session.closed:
                return session
        return None

    def allocate_tsih(self) -> int:
        """A TSIH no live session uses, never 0 (RFC 7143 11.12.6)."""
        for _ in range(MAX_TSIH):
            tsih = self._next_tsih
            self._next_tsih = tsih % MAX_TSIH + 1
            if tsih not in self._by_tsih:
                return tsih
        raise RuntimeError("no free TSIH: 65535 sessions are live")

    def create(self, *, session_type: str, initiator_name: str, initiator_alias: str | None, isid: bytes,
               target_name: str | None, parameters: SessionParameters, exp_cmd_sn: int,
               peer_address: str = "") -> Session:
        """Register a new session (login just finished, ``admission.admit_session`` counted it)."""
        config, scsi_target, nexus = None, None, None
        if target_name is not None and session_type == "Normal":
            config, scsi_target = self._targets[target_name]
            scsi_target = session_target(config, scsi_target, initiator_name)
            nexus = make_nexus(initiator_name, isid, target_name, config.tpgt)
        session = Session(tsih=self.allocate_tsih(), session_type=session_type, initiator_name=initiator_name,
                          isid=bytes(isid), target_name=target_name, target_config=config,
                          scsi_target=scsi_target, nexus=nexus, parameters=parameters,
                          window=CommandWindow(exp_cmd_sn, self.command_window), initiator_alias=initiator_alias,
                          peer_address=peer_address,
                          write_protected=config is not None and session_write_protected(config, initiator_name))
        self._by_tsih[session.tsih] = session
        return session

    def close(self, session: Session, *, logged_out: bool, reason: str) -> None:
        """End ``session``: tell the SCSI core (I_T nexus loss or logout) and forget it.

        Idempotent. The caller closes the connection itself; ``terminate_connection`` is
        used when the session is closed from elsewhere (reinstatement, cold reset, shutdown).
        """
        if session.closed:
            return
        session.closed = True
        self._by_tsih.pop(session.tsih, None)
        self.admission.session_closed(session.peer_address)
        if session.scsi_target is not None and session.nexus is not None:
            if logged_out:
                session.scsi_target.nexus_logged_out(session.nexus)
            else:
                session.scsi_target.nexus_lost(session.nexus)
        log.info("session closed: initiator %s isid 0x%s tsih %d target %s (%s)", session.initiator_name,
                 session.isid.hex(), session.tsih, session.target_name, reason)

    def terminate(self, session: Session, reason: str) -> None:
        """Close ``session`` from outside its own connection and drop that connection."""
        connection = session.connection
        self.close(session, logged_out=False, reason=reason)
        if connection is not None:
            connection.terminate(reason)

    def terminate_target_sessions(self, target_name: str | None, reason: str, *, keep: Session | None = None) -> None:
        """Drop every session of ``target_name`` (all targets when None) except ``keep``."""
        for session in list(self._by_tsih.values()):
            if session is keep:
                continue
            if target_name is None or session.target_name == target_name:
                self.terminate(session, reason)
