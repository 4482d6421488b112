"""Which logical units a copy may reach behind LIO (``odxtarget.copy.access.CopyAccess``;
docs/lio.md, "Access control for copies").

A TCMU ring says nothing about the initiator: every initiator of a device shares one synthetic
nexus (``processor.lu_nexus``), so the copy manager only knows which logical unit a command was
sent to, not through which target portal group (TPG) nor from whom. What the configuration
says about the TPGs is enough for a rule that holds whoever the sender was:

* EXTENDED COPY (``in_own_target``): a CSCD may name logical unit B of a command sent to A only
  when every TPG that exports A also exports B. Whichever TPG the command came through, B is
  in it, as the native front end's "same target" rule demands.
* ROD tokens (``reach``): a token of B is usable on A when every initiator that can reach A
  can also reach B: for each TPG exporting A, either it exports B too, or everyone it admits
  is admitted by a TPG exporting B with no CHAP secret other than the one it proved to the
  first (``admits_for_copies``, the native front end's rule). A demo-mode TPG admits anyone,
  so only another demo-mode TPG exporting B, demanding no other secret of anyone, covers it.

"Exports" is per initiator where ACLs list mapped LUNs (LUN masking, which ``lio_config``
gives LIO): a TPG exports a logical unit to the initiators whose map there shows it, and both
rules above ask about the initiators that reach A through each TPG (``viewers``). A CSCD's LU
must be writable for all of them, since a TCMU ring cannot tell a copy's source from its
destination's initiator: LIO refuses EXTENDED COPY and WRITE USING TOKEN sent to a
write-protected mapped LUN (they carry data-out), so only the other LUs a copy names need this.

The answer is the device's own shared nexus: reservations live in the kernel under LIO, so
there is no other nexus whose reservations the core could check. The configuration is the
daemon's file (LIO mode changes no targets live); TPGs edited by hand with targetcli are not
seen. ``lio_config`` gives each ACL its mapped LUNs (or every LUN of the TPG), so a TPG's ACLs
and its LUNs are the whole of what LIO decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from odxtarget.config import TargetConfig
from odxtarget.scsi.types import ItNexus
from odxtarget.transport.iscsi.copy_access import admits_for_copies, login_secret
from odxtarget.transport.iscsi.discovery import matching_acl

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit
    from odxtarget.transport.tcmu.handler import TcmuHandler

#: The storage object (logical unit) name whose device runs commands on a nexus, if any.
StorageObjectOf = Callable[[ItNexus], "str | None"]


def exported(target: TargetConfig, storage_object: str) -> bool:
    return any(mapping.storage_object == storage_object for mapping in target.luns)


def shown(target: TargetConfig, initiator: str | None, storage_object: str, *, writable: bool = False) -> bool:
    """``initiator`` (None: one no ACL names, in demo mode) sees ``storage_object`` through
    ``target``, and may write it when ``writable``: its ACL's mapped LUNs, else every LUN."""
    acl = matching_acl(target, initiator) if initiator is not None else None
    if acl is None or acl.mapped_luns is None:
        return exported(target, storage_object)
    objects = {mapping.lun: mapping.storage_object for mapping in target.luns}
    return any(objects.get(entry.lun) == storage_object and not (writable and entry.write_protect)
               for entry in acl.mapped_luns)


def viewers(target: TargetConfig, storage_object: str) -> list[str | None]:
    """Who reaches ``storage_object`` through ``target``: each ACL's initiator whose map shows
    it, and in demo mode anyone no ACL names (None)."""
    names: list[str | None] = [acl.initiator for acl in target.acls if shown(target, acl.initiator, storage_object)]
    return [*names, None] if target.demo_mode and exported(target, storage_object) else names


def storage_objects_by_nexus(handler: "TcmuHandler") -> StorageObjectOf:
    """Look a nexus up among the devices ``handler`` serves when asked."""
    def storage_object_of(nexus: ItNexus) -> str | None:
        for served in handler.devices.values():
            if served.processor.nexus == nexus:
                return served.info.config
        return None
    return storage_object_of


class LioCopyAccess:
    """``CopyAccess`` over the LIO configuration: see the module docstring."""

    def __init__(self, targets: Sequence[TargetConfig], storage_object_of: StorageObjectOf):
        self._targets = tuple(targets)
        self._storage_object_of = storage_object_of

    def reach(self, nexus: ItNexus, lu: "LogicalUnit") -> ItNexus | None:
        own = self._storage_object_of(nexus)
        exporting = self._exporting(own)
        if own is None or exporting is None:
            return None
        if all(self._everyone_reaches(tpg, own, lu.name) for tpg in exporting):
            return nexus
        return None

    def in_own_target(self, nexus: ItNexus, lu: "LogicalUnit") -> bool:
        own = self._storage_object_of(nexus)
        exporting = self._exporting(own)
        return own is not None and exporting is not None and all(
            shown(tpg, viewer, lu.name, writable=True) for tpg in exporting for viewer in viewers(tpg, own))

    def _exporting(self, own: str | None) -> list[TargetConfig] | None:
        """The TPGs through which someone reaches the LU ``own`` (the one a command was sent
        to); None when that LU is unknown or exported by none (then nothing else is
        reachable from it)."""
        if own is None:
            return None
        exporting = [tpg for tpg in self._targets if viewers(tpg, own)]
        return exporting or None

    def _everyone_reaches(self, tpg: TargetConfig, own: str, storage_object: str) -> bool:
        """Every initiator that reaches ``own`` through ``tpg`` can reach ``storage_object``
        through some TPG."""
        reaching = viewers(tpg, own)
        if all(shown(tpg, viewer, storage_object) for viewer in reaching):
            return True
        holders = [other for other in self._targets if exported(other, storage_object)]
        for initiator in reaching:
            if initiator is None:
                continue
            proven = login_secret(tpg, initiator)
            if not any(admits_for_copies(other, initiator, proven) and shown(other, initiator, storage_object)
                       for other in holders):
                return False
        if not tpg.demo_mode:
            return True
        anyone = _demanded_of_anyone(tpg)[0]        # what an initiator no ACL names proved
        return any(other.demo_mode and all(secret in (None, anyone) for secret in _demanded_of_anyone(other))
                   for other in holders)


def _demanded_of_anyone(target: TargetConfig) -> list[tuple[str, str] | None]:
    """The CHAP secrets a demo-mode ``target`` may demand: of initiators no ACL names first,
    then of each one an ACL names."""
    unnamed = None if target.chap is None else (target.chap.userid, target.chap.password)
    return [unnamed, *(login_secret(target, acl.initiator) for acl in target.acls)]
