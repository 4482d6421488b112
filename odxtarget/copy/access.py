"""Who may copy what: third-party copy obeys access control as if the initiator did the reads
and writes itself (docs/odx.md, "Access control").

A copy command names logical units the command was not sent to: EXTENDED COPY by CSCD
designators, WRITE USING TOKEN by the token's creator. Designators are guessable (they are
in VPD 83h and every ROD token), so naming an LU proves nothing; the copy manager asks the
front end, through ``CopyAccess``, whether the command's I_T nexus could reach that LU on its
own. The copy manager itself first checks the ``ScsiTarget`` the command came through; a
``CopyAccess`` answers for the logical units that target does not map.

Front ends implement ``CopyAccess``: ``odxtarget.transport.iscsi.copy_access`` over the live
targets and ACLs of the native iSCSI server, ``odxtarget.transport.tcmu.copy_access`` over the
LIO configuration. ``OwnTargetOnly`` is the policy of a front end that provides none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from odxtarget.scsi.command_table import CommandFlags
from odxtarget.scsi.types import ItNexus

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit

#: The access class of the reads a copy makes from a source LU: a READ's (SPC-4 5.13.1).
READ_ACCESS = int(CommandFlags.PR_READ)
#: The access class of the writes a copy makes to a destination LU: a WRITE's.
WRITE_ACCESS = int(CommandFlags.WRITES_MEDIUM)


class CopyAccess(Protocol):
    """What a front end knows about which logical units an I_T nexus can reach."""

    def reach(self, nexus: ItNexus, lu: "LogicalUnit") -> ItNexus | None:
        """The I_T nexus through which ``nexus``'s initiator can reach ``lu``: ``nexus`` itself
        when ``lu`` is mapped in ``nexus``'s own target, else a nexus of another target that
        admits the initiator and maps ``lu``; None when there is none. Rules ROD tokens
        (WRITE USING TOKEN, REPORT ALL ROD TOKENS)."""
        ...

    def in_own_target(self, nexus: ItNexus, lu: "LogicalUnit") -> bool:
        """``lu`` is mapped in the target ``nexus`` addresses: the only logical units an
        EXTENDED COPY's CSCD descriptors may name."""
        ...


class OwnTargetOnly:
    """No knowledge beyond the command's own ``ScsiTarget``, which the copy manager checks
    itself: nothing else is reachable. The policy until a front end provides its own."""

    def reach(self, nexus: ItNexus, lu: "LogicalUnit") -> ItNexus | None:
        return None

    def in_own_target(self, nexus: ItNexus, lu: "LogicalUnit") -> bool:
        return False


class LunMap(Protocol):
    """A target's LUN map, as ``odxtarget.scsi.target.ScsiTarget`` has it."""

    @property
    def luns(self) -> "dict[int, LogicalUnit]": ...


def maps(target: LunMap | None, lu: "LogicalUnit") -> bool:
    """``target`` presents ``lu`` at some LUN (an LU may sit at different LUNs per target)."""
    return target is not None and any(unit is lu for unit in target.luns.values())
