"""The control socket's wire format: one JSON object per line, each way.

A request is ``{"op": "<name>", "args": {...}}`` and gets exactly one reply,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "<one line>"}``; a connection may
carry any number of requests, answered in order. The socket is a Unix stream socket with mode
0600 owned by root (docs/admin.md lists every operation).
"""

from __future__ import annotations

import json
import os
from typing import Any

#: Where the daemon listens unless told otherwise: next to its state (one daemon per state_dir).
CONTROL_SOCKET_NAME = "control.sock"
#: Where a daemon started by systemd (``--control-socket``) conventionally listens.
RUN_CONTROL_SOCKET = "/run/odxtarget/control.sock"
#: Environment variable both ``odxtarget serve`` and ``odxtargetcli`` read for the socket path.
SOCKET_ENVIRONMENT = "ODXTARGET_CONTROL_SOCKET"
#: A request or reply longer than this is refused (a full config dump is a few hundred KiB).
MAX_LINE_BYTES = 16 * 1024 * 1024
ENCODING = "utf-8"


class AdminError(Exception):
    """A refused request; the message is one line a human can act on."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def default_control_socket(state_dir: str) -> str:
    """The socket path for a daemon whose state lives in ``state_dir``, unless overridden."""
    return os.environ.get(SOCKET_ENVIRONMENT) or os.path.join(state_dir, CONTROL_SOCKET_NAME)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=False).encode(ENCODING) + b"\n"


def decode_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """``(op, args)`` from one request line.

    Raises:
        AdminError: not JSON, not an object, no string ``op``, or ``args`` not an object.
    """
    try:
        message = json.loads(line.decode(ENCODING))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdminError(f"bad request: not a JSON line ({error})") from None
    if not isinstance(message, dict):
        raise AdminError("bad request: expected a JSON object")
    unknown = sorted(set(message) - {"op", "args"})
    if unknown:
        raise AdminError(f"bad request: unknown key {unknown[0]!r} (expected op and args)")
    op = message.get("op")
    if not isinstance(op, str) or not op:
        raise AdminError('bad request: "op" must be a non-empty string')
    args = message.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise AdminError('bad request: "args" must be an object')
    return op, args


def success(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def failure(message: str) -> dict[str, Any]:
    return {"ok": False, "error": " ".join(str(message).split())}
