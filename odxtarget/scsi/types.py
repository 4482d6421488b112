"""Value types that cross the boundary between a front end and the SCSI core."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.target import MaskedLun


@dataclass(frozen=True, slots=True)
class ItNexus:
    """An I_T nexus: which initiator port talks to which target port (SAM-5 4.7).

    ``initiator_port`` is the SCSI initiator port name, for iSCSI
    ``"<initiator iqn>,i,0x<ISID>"`` (RFC 7143 10.1.1); ``target_port`` likewise
    ``"<target iqn>,t,0x<TPGT>"``. Unit attentions, reservations and ODX list
    identifiers are all kept per nexus, so both names must be stable for the life
    of a session and differ between sessions of different initiators.

    ``shared`` marks a nexus that stands for every initiator of an LU because the front end
    cannot tell them apart (a TCMU ring carries no nexus): state kept per nexus is then
    shared, and the copy manager refuses what would hand one host another host's results.
    """

    initiator_port: str
    target_port: str
    relative_target_port_id: int = 1
    target_port_group: int = 1
    shared: bool = False

    @property
    def initiator_name(self) -> str:
        """The initiator device name (the iqn without the ``,i,0x...`` suffix)."""
        return self.initiator_port.split(",", 1)[0]


@dataclass(slots=True)
class ScsiCommand:
    """One SCSI command as a front end received it.

    ``data_out`` holds the data-out buffer the front end collected (for iSCSI, up to the
    Expected Data Transfer Length); it may be shorter or longer than what the CDB asks
    for, and the core decides what that means. ``allocation_length`` is how many
    data-in bytes the front end can carry (iSCSI: Expected Data Transfer Length for
    reads); the core never returns more than the CDB's own allocation length, and the
    front end truncates to its own limit and reports the residual.
    """

    cdb: bytes
    nexus: ItNexus
    lun: int = 0
    data_out: bytes | bytearray | memoryview = b""
    expected_transfer_length: int = 0
    task_tag: int = 0
    task_attribute: int = 0  # a TaskAttribute: 0 simple, 1 head of queue, 2 ordered, 4 ACA
    #: The front end's access rule makes the LU read-only for this command's I_T nexus (a
    #: demo-mode session of a target with demo_mode_write_protect): the dispatcher refuses
    #: writes with WRITE PROTECTED and MODE SENSE reports WP, as for a read-only LU.
    write_protected: bool = False


class TaskAttribute(enum.IntEnum):
    """SAM-5 8.6 task attributes, with the TASK ATTRIBUTE codes of SAM-5's transport mappings
    (SRP, SAS: 0 simple, 1 head of queue, 2 ordered, 4 ACA). Front ends translate their own
    encodings (iSCSI's ATTR field counts differently, RFC 7143 11.3.1)."""

    SIMPLE = 0
    HEAD_OF_QUEUE = 1
    ORDERED = 2
    ACA = 4


class Status(enum.IntEnum):
    """SAM-5 status codes."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


@dataclass(slots=True)
class ScsiResult:
    """What the core answers for one command.

    ``data_in`` is what the command returns (already cut to the CDB's allocation length);
    ``transfer_length`` is how many bytes the command moved or wanted to move in its
    data direction (data-in length for reads, data-out bytes consumed for writes), from
    which a front end computes iSCSI residuals. ``sense`` is the sense data in the format
    the LU's D_SENSE bit selects, empty unless status is CHECK CONDITION.
    """

    status: int = Status.GOOD
    data_in: bytes | bytearray | memoryview = b""
    sense: bytes = b""
    transfer_length: int = 0
    data_out_consumed: int = 0
    extra: dict = field(default_factory=dict)


class TaskManagementFunction(enum.IntEnum):
    """SAM-5 task management functions, numbered as RFC 7143 11.5.1 does."""

    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8


class TmfResponse(enum.IntEnum):
    """Task management function response codes (RFC 7143 11.6.1), shared by the core and the
    iSCSI PDU layer; the second spelling of a code is an alias of the first."""

    FUNCTION_COMPLETE = 0
    TASK_DOES_NOT_EXIST = 1
    LUN_DOES_NOT_EXIST = 2
    TASK_STILL_ALLEGIANT = 3
    REASSIGNMENT_NOT_SUPPORTED = 4
    TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED = 4
    NOT_SUPPORTED = 5
    FUNCTION_NOT_SUPPORTED = 5
    AUTHORIZATION_FAILED = 6
    FUNCTION_AUTHORIZATION_FAILED = 6
    FUNCTION_REJECTED = 255
    REJECTED = 255


class TargetPort(Protocol):
    """What a front end calls on the SCSI target port it serves (``odxtarget.scsi.target.ScsiTarget``).

    The core runs commands and keeps per-nexus state; the front end owns the tasks it has
    queued, so PREEMPT AND ABORT reaches them through the aborter it registers.
    """

    def execute(self, command: ScsiCommand) -> ScsiResult: ...

    def data_out_length(self, cdb: bytes, lun: int = 0) -> int | None: ...

    def solicited_data_out(self, cdb: bytes, lun: int = 0) -> int: ...

    def logical_unit(self, lun: int) -> object | None: ...

    def masked(self, mapped: Mapping[int, MaskedLun]) -> TargetPort:
        """The target port as an initiator with a LUN mask sees it (an ACL's mapped LUNs)."""
        ...

    def task_management(self, function: TaskManagementFunction, nexus: ItNexus, lun: int | None = None, *,
                        unit_attention: bool = True) -> int: ...

    def reset_announcements(self, function: TaskManagementFunction, lun: int | None = None) -> list:
        """Storage work that resets the same logical units on the other gateways (docs/cluster.md)."""
        ...

    def set_task_aborter(self, aborter: Callable[[object, frozenset[ItNexus]], object] | None) -> None: ...

    def nexus_lost(self, nexus: ItNexus) -> None: ...

    def nexus_logged_out(self, nexus: ItNexus) -> None: ...
