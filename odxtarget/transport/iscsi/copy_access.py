"""Which logical units an iSCSI I_T nexus can reach, for the copy manager's access control
(``odxtarget.copy.access.CopyAccess``; docs/odx.md, "Access control").

An initiator reaches a logical unit through its own session's target when its LUN map there
shows it, and through any other target that admits the initiator's name (an ACL names it, or
the target is in demo mode; ``discovery.initiator_may_access``, the rule logins use) and whose
LUN map for that initiator shows it: an ACL's mapped LUNs mask the rest
(``lun_masking.reaches``).
Initiator names are only claims: where the other target demands CHAP of the initiator, it
counts only if its secret is the one the initiator's own target demands, which the
initiator proved it knows when it logged in there (``login_secret``). Otherwise a name
claimed at a target without CHAP would open the LUs of one that has it.
The I_T nexus it would have there is the one a login with the same ISID would get
(``session.make_nexus``, RFC 7143 10.1.1), so reservations held or registered through that
target apply to the copy as they would to the initiator's own READ.

The targets are read on every question from ``entries`` (``SessionRegistry.entries``), which
admin changes update live, so a deleted ACL or unmapped LUN takes effect for the next copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from odxtarget.config import ChapConfig, TargetConfig
from odxtarget.copy.access import LunMap
from odxtarget.scsi.types import ItNexus
from odxtarget.transport.iscsi.discovery import initiator_may_access, matching_acl, names_equal
from odxtarget.transport.iscsi.lun_masking import reaches
from odxtarget.transport.iscsi.session import make_nexus

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit

#: The live (configuration, SCSI target) pairs of the server; the targets are ``ScsiTarget``s.
TargetEntries = Callable[[], Iterable[tuple[TargetConfig, LunMap]]]

#: What separates the initiator name from the ISID in an initiator port name (RFC 7143 10.1.1).
ISID_SEPARATOR = ",i,0x"
#: What separates the target name from the TPGT in a target port name.
TPGT_SEPARATOR = ",t,0x"


def isid_of(nexus: ItNexus) -> bytes:
    """The ISID in an iSCSI initiator port name ``<iqn>,i,0x<ISID>`` (empty if there is none)."""
    _, separator, isid = nexus.initiator_port.rpartition(ISID_SEPARATOR)
    try:
        return bytes.fromhex(isid) if separator else b""
    except ValueError:
        return b""


def target_name_of(nexus: ItNexus) -> str:
    """The target name in an iSCSI target port name ``<iqn>,t,0x<TPGT>``."""
    return nexus.target_port.rpartition(TPGT_SEPARATOR)[0] or nexus.target_port


def login_secret(target: TargetConfig, initiator: str) -> tuple[str, str] | None:
    """The CHAP name and secret a login of ``initiator`` to ``target`` must prove: its ACL's
    own, else the target's (docs/configuration.md, "ACLs"); None when it needs none."""
    acl = matching_acl(target, initiator)
    chap: ChapConfig | None = acl.chap if acl is not None and acl.chap is not None else target.chap
    return None if chap is None else (chap.userid, chap.password)


def admits_for_copies(target: TargetConfig, initiator: str, proven: tuple[str, str] | None) -> bool:
    """``target`` would let ``initiator`` log in, given that it has proven ``proven``."""
    if not initiator_may_access(target, initiator):
        return False
    secret = login_secret(target, initiator)
    return secret is None or secret == proven


class IscsiCopyAccess:
    """``CopyAccess`` over the native iSCSI server's targets and ACLs."""

    def __init__(self, entries: TargetEntries):
        self._entries = entries

    def reach(self, nexus: ItNexus, lu: "LogicalUnit") -> ItNexus | None:
        own = target_name_of(nexus)
        initiator = nexus.initiator_name
        entries = list(self._entries())
        proven = next((login_secret(config, initiator) for config, _ in entries if names_equal(config.iqn, own)),
                      None)
        other: TargetConfig | None = None
        for config, scsi_target in entries:
            if not reaches(config, scsi_target, initiator, lu):
                continue
            if names_equal(config.iqn, own):
                return nexus
            if other is None and admits_for_copies(config, initiator, proven):
                other = config
        if other is None:
            return None
        return make_nexus(initiator, isid_of(nexus), other.iqn, other.tpgt)

    def in_own_target(self, nexus: ItNexus, lu: "LogicalUnit") -> bool:
        own = target_name_of(nexus)
        initiator = nexus.initiator_name
        return any(names_equal(config.iqn, own) and reaches(config, scsi_target, initiator, lu)
                   for config, scsi_target in self._entries())
