"""The native iSCSI target (RFC 7143).

Sans-IO layers: ``pdu`` (BHS codec, digests, framer), ``text``/``negotiation``/``chap``/
``login``/``discovery`` (the login phase), ``session`` (CmdSN window, TSIH registry),
``task``/``tmf``/``connection`` (full feature phase). ``server`` is the only module doing
I/O (asyncio). Public names are loaded lazily so that importing one sans-IO module never
drags in asyncio.
"""

from __future__ import annotations

import importlib

__all__ = ["IscsiServer", "IscsiConnection", "SessionRegistry", "install_event_loop_policy"]

_HOMES = {
    "IscsiServer": "odxtarget.transport.iscsi.server",
    "install_event_loop_policy": "odxtarget.transport.iscsi.server",
    "IscsiConnection": "odxtarget.transport.iscsi.connection",
    "SessionRegistry": "odxtarget.transport.iscsi.session",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
