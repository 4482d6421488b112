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
* 3 s WRITE USING TOKEN time budget: under Windows' 4 s per command. A synchronous WRITE
  USING TOKEN on the native front end runs on the daemon's one event loop and holds every
  other session while it runs, so the budget also bounds that stall; lower it (the config's
  ``odx.write_using_token_budget``) where slow storage makes stalls matter. Truncation is
  partial success to Windows (it continues from INFORMATION) and to ``odxtarget copy``, so a
  short budget costs one round trip per budget, not a failure.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class CopyLimits:
    max_range_descriptors: int = 64
    default_inactivity_timeout: int = 60
    max_inactivity_timeout: int = 600
    min_token_lifetime: int = 1
    max_token_transfer_bytes: int = 256 * MiB
    optimal_transfer_bytes: int = 64 * MiB
    #: Seconds one synchronous WRITE USING TOKEN may run before it stops with a residual:
    #: under Windows' 4 s per command. Lower it to shorten how long a slow copy holds the
    #: other sessions of the native front end (docs/odx.md).
    write_using_token_budget: float = 3.0
    #: Bytes of source data that snapshot (reflink) ROD files may represent in total.
    max_rod_bytes: int = 64 * GiB
    #: Live tokens in the daemon-wide store (each also costs tombstone memory later).
    max_tokens: int = 4096
    #: Live tokens one initiator (by iSCSI name) may hold, so one host cannot starve others.
    max_tokens_per_initiator: int = 1024
    #: Snapshot (ROD file) bytes one initiator's tokens may represent.
    max_rod_bytes_per_initiator: int = 16 * GiB
    #: Seconds completed list results are kept for RRTI / RECEIVE COPY STATUS.
    result_retention: float = 120.0
    #: Results kept per I_T nexus; the oldest completed ones are dropped beyond this.
    max_lists_per_nexus: int = 64
    # EXTENDED COPY (LID1) limits, reported in VPD 8Fh Parameter Data and RCOP.
    max_cscd_descriptors: int = 64
    max_segment_descriptors: int = 64
    max_descriptor_list_length: int = 8192
    max_segment_bytes: int = 64 * MiB
    max_concurrent_copies: int = 64
    #: Bytes one background step moves before it yields to the event loop.
    background_step_bytes: int = 8 * MiB

    def __post_init__(self) -> None:
        if self.optimal_transfer_bytes > self.max_token_transfer_bytes:
            raise ValueError("optimal_transfer_bytes must not exceed max_token_transfer_bytes")
        if not 0 < self.default_inactivity_timeout <= self.max_inactivity_timeout:
            raise ValueError("need 0 < default_inactivity_timeout <= max_inactivity_timeout")
        if not 1 <= self.max_range_descriptors <= 0xFFFF:
            raise ValueError("max_range_descriptors must be 1..65535")
        if self.write_using_token_budget <= 0:
            raise ValueError("write_using_token_budget must be positive")
        if not 0 < self.max_tokens_per_initiator <= self.max_tokens:
            raise ValueError("max_tokens_per_initiator must be 1..max_tokens")
        if not 0 < self.max_rod_bytes_per_initiator <= self.max_rod_bytes:
            raise ValueError("max_rod_bytes_per_initiator must be positive and at most max_rod_bytes")
        if self.max_token_transfer_bytes % 4096 or self.optimal_transfer_bytes % 4096:
            raise ValueError("transfer sizes must be multiples of 4096 bytes")

    def max_token_transfer_blocks(self, block_size: int) -> int:
        return self.max_token_transfer_bytes // block_size

    def optimal_transfer_blocks(self, block_size: int) -> int:
        return self.optimal_transfer_bytes // block_size
