"""The copy manager's limits: what VPD 8Fh / RECEIVE COPY OPERATING PARAMETERS report, and
what the handlers enforce. One set per daemon.

Why these defaults (docs/odx.md, "Limits"):

* 64 range descriptors: Windows never sends more (classpnp caps at 64), FreeBSD reports 64.
* inactivity timeout 60 s default / 600 s maximum: FreeBSD's values; Windows fails an offload
  read early if the caller's TimeToLive exceeds the maximum.
* MAXIMUM TOKEN TRANSFER SIZE 256 MiB and OPTIMAL TRANSFER COUNT 64 MiB: Windows sizes each
  WRITE USING TOKEN as min(MTTS, OTC) (64 MiB here), which even the read/write fallback moves
  in well under a second on local storage, and the time budget truncates the rest, so no
  command comes near Windows' 4 s expectation.
* 3 s WRITE USING TOKEN time budget: under Windows' 4 s per command. The copy's steps run on
  storage workers, so other commands run meanwhile (docs/odx.md, "How copies run"); the
  budget is only about the initiator's command timeout. Truncation is partial success to
  Windows (it continues from INFORMATION) and to ``odxtarget copy``, so a short budget costs
  one round trip per budget, not a failure.
* 64 background copies at once (``max_concurrent_copies``): more wait, in progress, so a
  burst of IMMED=1 copies cannot take every storage worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB

#: Field metadata key: the field is a key of the configuration's "odx" section
#: (docs/configuration.md, "ODX limits") with the field's default. Its value says how the file
#: spells and bounds it: ``kind`` is "integer", "size" (bytes, ``"64M"`` accepted) or "seconds"
#: (a number); every value must be positive; ``maximum`` bounds it, ``multiple_of`` a size, and
#: ``at_most`` names the field it must not exceed.
CONFIG_METADATA = "config"
#: Field metadata key: ``odxtargetcli`` may change the field live in ``/odx`` (docs/admin.md),
#: under ``name``, described by ``help``.
ADMIN_METADATA = "admin"
#: Every block size divides it, so a byte limit that is a multiple is whole blocks.
TRANSFER_GRANULE = 4096


def _configurable(default: Any, kind: str, *, admin_name: str | None = None, admin_help: str = "",
                  **rules: Any) -> Any:
    """A field the configuration file sets (see ``CONFIG_METADATA``)."""
    metadata: dict[str, Any] = {CONFIG_METADATA: {"kind": kind, **rules}}
    if admin_name is not None:
        metadata[ADMIN_METADATA] = {"name": admin_name, "help": admin_help}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class CopyLimits:
    #: The VPD 8Fh MAXIMUM RANGE DESCRIPTORS field is 16 bits.
    max_range_descriptors: int = _configurable(64, "integer", maximum=0xFFFF)
    #: Seconds. The VPD 8Fh inactivity timeout fields are 32 bits; FFFFFFFFh means "no maximum".
    default_inactivity_timeout: int = _configurable(
        60, "integer", maximum=0xFFFF_FFFE, at_most="max_inactivity_timeout",
        admin_name="default_inactivity_timeout",
        admin_help="seconds a token lives unused when POPULATE TOKEN asks for the default (SPC-4 5.16.6.3)")
    max_inactivity_timeout: int = _configurable(
        600, "integer", maximum=0xFFFF_FFFE, admin_name="max_inactivity_timeout",
        admin_help="largest INACTIVITY TIMEOUT a POPULATE TOKEN may ask for")
    min_token_lifetime: int = 1
    max_token_transfer_bytes: int = _configurable(
        256 * MiB, "size", multiple_of=TRANSFER_GRANULE, admin_name="max_token_transfer_size",
        admin_help="MAXIMUM TOKEN TRANSFER SIZE, in bytes (VPD 8Fh)")
    optimal_transfer_bytes: int = _configurable(
        64 * MiB, "size", multiple_of=TRANSFER_GRANULE, at_most="max_token_transfer_bytes",
        admin_name="optimal_transfer_size", admin_help="OPTIMAL TRANSFER COUNT, in bytes (VPD 8Fh)")
    #: Seconds one synchronous WRITE USING TOKEN may run before it stops with a residual:
    #: under Windows' 4 s per command (docs/odx.md, "How copies run").
    #: At most 60 s in a config: past that, initiators time the command out anyway.
    write_using_token_budget: float = _configurable(
        3.0, "seconds", maximum=60.0, admin_name="time_budget",
        admin_help="seconds one WRITE USING TOKEN may run before it stops with a residual")
    #: Bytes of source data that snapshot (reflink) ROD files may represent in total.
    max_rod_bytes: int = _configurable(64 * GiB, "size", multiple_of=TRANSFER_GRANULE)
    #: Live tokens in the daemon-wide store (each also costs tombstone memory later).
    max_tokens: int = 4096
    #: Live tokens one initiator (by iSCSI name) may hold, so one host cannot starve others;
    #: ``max_tokens`` still bounds them all together, so a larger value means "no own limit".
    max_tokens_per_initiator: int = _configurable(1024, "integer")
    #: Snapshot (ROD file) bytes one initiator's tokens may represent; ``max_rod_bytes`` still
    #: bounds them all together.
    max_rod_bytes_per_initiator: int = _configurable(16 * GiB, "size", multiple_of=TRANSFER_GRANULE)
    #: Seconds completed list results are kept for RRTI / RECEIVE COPY STATUS.
    result_retention: float = 120.0
    #: Results kept per I_T nexus; the oldest completed ones are dropped beyond this.
    max_lists_per_nexus: int = 64
    # EXTENDED COPY (LID1) limits, reported in VPD 8Fh Parameter Data and RCOP.
    max_cscd_descriptors: int = 64
    max_segment_descriptors: int = 64
    max_descriptor_list_length: int = 8192
    max_segment_bytes: int = 64 * MiB
    #: Background (IMMED=1) copies that run at once; the others wait, reported in progress.
    max_concurrent_copies: int = 64
    #: Bytes one background copy step moves (and the first step of a synchronous one): what
    #: one piece of storage work holds a worker for, and how often RRTI's count moves.
    background_step_bytes: int = _configurable(8 * MiB, "size", multiple_of=TRANSFER_GRANULE)

    def __post_init__(self) -> None:
        if self.optimal_transfer_bytes > self.max_token_transfer_bytes:
            raise ValueError("optimal_transfer_bytes must not exceed max_token_transfer_bytes")
        if not 0 < self.default_inactivity_timeout <= self.max_inactivity_timeout:
            raise ValueError("need 0 < default_inactivity_timeout <= max_inactivity_timeout")
        if not 1 <= self.max_range_descriptors <= 0xFFFF:
            raise ValueError("max_range_descriptors must be 1..65535")
        if self.write_using_token_budget <= 0:
            raise ValueError("write_using_token_budget must be positive")
        if self.max_tokens_per_initiator <= 0 or self.max_rod_bytes_per_initiator <= 0:
            raise ValueError("max_tokens_per_initiator and max_rod_bytes_per_initiator must be positive")
        if self.max_token_transfer_bytes % 4096 or self.optimal_transfer_bytes % 4096:
            raise ValueError("transfer sizes must be multiples of 4096 bytes")

    def max_token_transfer_blocks(self, block_size: int) -> int:
        return self.max_token_transfer_bytes // block_size

    def optimal_transfer_blocks(self, block_size: int) -> int:
        return self.optimal_transfer_bytes // block_size
