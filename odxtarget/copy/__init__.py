"""Third-party copy: ODX token copies (POPULATE TOKEN / WRITE USING TOKEN) and EXTENDED COPY.

The daemon builds one ``CopyManager(state_dir, CopyLimits())`` and ``attach``es every logical
unit to it; see ``odxtarget.copy.manager`` and docs/odx.md.
"""

from __future__ import annotations

import importlib

__all__ = ["CopyLimits", "CopyManager"]

# Loaded on first use, so that importing ``odxtarget.copy.limits`` (the configuration reads
# CopyLimits' fields) does not import the copy manager.
_HOMES = {"CopyLimits": "odxtarget.copy.limits", "CopyManager": "odxtarget.copy.manager"}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
