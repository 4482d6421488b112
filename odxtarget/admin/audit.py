"""Who changed what: one INFO line per admin change made over the control socket.

The peer is named by the credentials the kernel gives for a Unix socket (SO_PEERCRED,
unix(7)): its uid and pid, which a client cannot forge. What changed is the operation and its
arguments as sent, with every secret (CHAP passwords) written as ``***``; the outcome ends the
line, so a refused change is told from an applied one. Operations that only look
(``OperationSpec.reads_only``) are not logged. docs/deployment.md, "Who changed what".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("odxtarget.admin")

REDACTED = "***"


@dataclass(frozen=True, slots=True)
class Peer:
    """A control socket client, from SO_PEERCRED (None where the kernel gave nothing)."""

    pid: int | None
    uid: int | None
    gid: int | None = None

    def describe(self) -> str:
        return f"uid {_or_unknown(self.uid)} pid {_or_unknown(self.pid)}"


def is_secret(parameter: str) -> bool:
    """Parameters whose values never reach a log: every password (CHAP's and mutual CHAP's)."""
    return "password" in parameter.lower() or "secret" in parameter.lower()


def redacted(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with secret values replaced by ``***`` (an empty value, which clears a
    credential, stays visible as such)."""
    return {name: (REDACTED if is_secret(name) and value not in (None, "") else value)
            for name, value in args.items()}


def describe_change(op: str, args: dict[str, Any]) -> str:
    """``op name=value ...`` with secrets redacted; values as JSON, so quoting is unambiguous."""
    parts = [op] + [f"{name}={json.dumps(value)}" for name, value in redacted(args).items()]
    return " ".join(parts)


def log_change(peer: Peer, op: str, args: dict[str, Any], outcome: str) -> None:
    log.info("admin change by %s: %s: %s", peer.describe(), describe_change(op, args), outcome)


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)
