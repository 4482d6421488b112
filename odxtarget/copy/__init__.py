"""Third-party copy: ODX token copies (POPULATE TOKEN / WRITE USING TOKEN) and EXTENDED COPY.

The daemon builds one ``CopyManager(state_dir, CopyLimits())`` and ``attach``es every logical
unit to it; see ``odxtarget.copy.manager`` and docs/odx.md.
"""

from odxtarget.copy.limits import CopyLimits
from odxtarget.copy.manager import CopyManager

__all__ = ["CopyLimits", "CopyManager"]
