"""Per-LU copy counters: tokens created, bytes offloaded per method, failures per sense code."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from odxtarget.scsi.sense import SenseData
from odxtarget.storage.copy_strategies import CopyMethod


@dataclass
class CopyCounters:
    tokens_created: int = 0
    snapshot_tokens: int = 0
    populate_token: int = 0
    write_using_token: int = 0
    extended_copy: int = 0
    bytes_by_method: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)

    def add_bytes(self, moved: dict[CopyMethod, int]) -> None:
        for method, count in moved.items():
            self.bytes_by_method[method.value] += count

    def add_failure(self, sense: SenseData | None) -> None:
        if sense is None:
            return
        self.failures[f"{int(sense.key):X}/{sense.asc:02X}/{sense.ascq:02X}"] += 1

    def as_dict(self) -> dict:
        return {
            "tokens_created": self.tokens_created,
            "snapshot_tokens": self.snapshot_tokens,
            "commands": {"populate_token": self.populate_token, "write_using_token": self.write_using_token,
                         "extended_copy": self.extended_copy},
            "bytes": dict(sorted(self.bytes_by_method.items())),
            "failures": dict(sorted(self.failures.items())),
        }
