"""Which LUNs an initiator sees at a target: LUN masking by the ACL's mapped LUNs
(docs/configuration.md, "ACLs"; targetcli's mapped_lun).

An ACL that lists ``mapped_luns`` shows its initiator exactly those: each of the target's LUNs
``lun`` under the number ``mapped_lun``, read-only where ``write_protect`` is set. An ACL
without the list, and a demo-mode login that no ACL names, see every LUN of the target under
its own number and follow the target's LUN changes live.

A session gets its map once, at login (``session_target``): the target's ``ScsiTarget`` itself,
or a masked view of it (``ScsiTarget.masked``). The same rule answers the copy manager's
questions for logins that do not exist yet (``reaches``), so a third-party copy reaches only
what the nexus's own map shows (docs/security.md, "Third-party copy"). ``lun_map_of`` is what a
live change compares to decide whether a session's map changed (``odxtarget.admin.live``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from odxtarget.config import TargetConfig
from odxtarget.scsi.target import MaskedLun
from odxtarget.scsi.types import TargetPort
from odxtarget.transport.iscsi.discovery import matching_acl

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.copy.access import LunMap
    from odxtarget.scsi.lu import LogicalUnit


def lun_mask(target: TargetConfig, initiator: str) -> dict[int, MaskedLun] | None:
    """The initiator's LUN mask at ``target`` (its number -> the target's LUN), or None when
    it sees every LUN of the target (no ACL names it, or its ACL lists no mapped LUNs)."""
    acl = matching_acl(target, initiator)
    if acl is None or acl.mapped_luns is None:
        return None
    return {m.mapped_lun: MaskedLun(m.lun, m.write_protect) for m in acl.mapped_luns}


def session_target(target: TargetConfig, scsi_target: TargetPort, initiator: str) -> TargetPort:
    """The SCSI target port a session of ``initiator`` uses: ``scsi_target``, or its masked view."""
    mask = lun_mask(target, initiator)
    return scsi_target if mask is None else scsi_target.masked(mask)


def reaches(target: TargetConfig, scsi_target: "LunMap", initiator: str, lu: "LogicalUnit") -> bool:
    """A session of ``initiator`` at ``target`` would see ``lu`` at some LUN."""
    mask = lun_mask(target, initiator)
    luns = scsi_target.luns
    if mask is None:
        return any(unit is lu for unit in luns.values())
    return any(luns.get(entry.lun) is lu for entry in mask.values())


def lun_map_of(target: TargetConfig, initiator: str) -> dict[int, tuple[str, bool]] | None:
    """What a session of ``initiator`` at ``target`` sees, by storage object: its number ->
    (storage object, write-protected); None when it follows the target's whole LUN map."""
    mask = lun_mask(target, initiator)
    if mask is None:
        return None
    objects = {m.lun: m.storage_object for m in target.luns}
    return {number: (objects[entry.lun], entry.write_protect)
            for number, entry in mask.items() if entry.lun in objects}
