"""Mode pages of one logical unit (SPC-4 7.5, SBC-4 6.5): values, changeable masks, defaults.

Theory of operation
-------------------
A ``ModeState`` holds the few parameters that can change (WCE, D_SENSE, SWP); every page is
rendered from it on demand, so MODE SENSE and MODE SELECT cannot disagree. Each ``ModePageSpec``
gives the page's fixed length, a renderer, and a changeable mask of the same length. MODE
SELECT accepts a page only if every bit outside the mask equals the current value (SPC-4
6.9: a changed non-changeable bit is INVALID FIELD IN PARAMETER LIST). A LU's ``ModeLimits``
narrow the masks where the configuration forbids a change (``write_cache: false`` keeps WCE at
0), and MODE SENSE with PC=01b reports the narrowed masks. There are no saved pages; a LU reset
restores the defaults (the config's values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from odxtarget.scsi.constants import ModePage

# Caching page (SBC-4 6.5.5) byte 2.
WCE = 0x04
# Control page (SPC-4 7.5.8) bytes 2 and 4.
GLTSD = 0x02
D_SENSE = 0x04
SWP = 0x08
#: BUSY TIMEOUT PERIOD FFFFh: unlimited (SPC-4 7.5.8).
UNLIMITED_BUSY_TIMEOUT = 0xFFFF
# Informational exceptions control page (SPC-4 7.5.12) byte 2.
DEXCPT = 0x08


@dataclass(slots=True)
class ModeState:
    """The changeable mode parameters of a logical unit (shared by all I_T nexuses)."""

    write_cache: bool = True
    d_sense: bool = False
    software_write_protect: bool = False

    def copy(self) -> "ModeState":
        return ModeState(self.write_cache, self.d_sense, self.software_write_protect)


@dataclass(frozen=True, slots=True)
class ModeLimits:
    """What the configuration lets MODE SELECT change on one LU, beyond the pages' own masks."""

    #: False when the configuration turned the write cache off: an initiator cannot turn it on.
    write_cache_changeable: bool = True


def _no_limits(limits: ModeLimits, mask: bytearray) -> None:
    """Pages whose changeable bits the configuration never narrows."""


@dataclass(frozen=True, slots=True)
class ModePageSpec:
    code: int
    length: int  # whole page, including the 2-byte header
    render: Callable[[ModeState], bytearray]
    changeable: bytes  # every bit MODE SELECT may ever change
    apply: Callable[[ModeState, bytes], None]
    #: Clears the bits of ``changeable`` a LU's ``ModeLimits`` forbid.
    narrow: Callable[[ModeLimits, bytearray], None] = _no_limits

    def changeable_for(self, limits: ModeLimits) -> bytes:
        """The changeable mask on a LU with ``limits``."""
        mask = bytearray(self.changeable)
        self.narrow(limits, mask)
        return bytes(mask)


def _page(code: int, length: int) -> bytearray:
    page = bytearray(length)
    page[0] = code
    page[1] = length - 2
    return page


def _render_caching(state: ModeState) -> bytearray:
    page = _page(ModePage.CACHING, 20)
    if state.write_cache:
        page[2] |= WCE
    return page


def _apply_caching(state: ModeState, page: bytes) -> None:
    state.write_cache = bool(page[2] & WCE)


def _narrow_caching(limits: ModeLimits, mask: bytearray) -> None:
    if not limits.write_cache_changeable:
        mask[2] &= ~WCE & 0xFF


def _render_control(state: ModeState) -> bytearray:
    page = _page(ModePage.CONTROL, 12)
    page[2] = GLTSD | (D_SENSE if state.d_sense else 0)
    # byte 3: QUEUE ALGORITHM MODIFIER 0 (restricted reordering), QERR 0.
    page[4] = SWP if state.software_write_protect else 0
    page[8:10] = UNLIMITED_BUSY_TIMEOUT.to_bytes(2, "big")
    return page


def _apply_control(state: ModeState, page: bytes) -> None:
    state.d_sense = bool(page[2] & D_SENSE)
    state.software_write_protect = bool(page[4] & SWP)


def _render_informational_exceptions(state: ModeState) -> bytearray:
    page = _page(ModePage.INFORMATIONAL_EXCEPTIONS_CONTROL, 12)
    page[2] = DEXCPT  # no informational exceptions are ever reported
    return page


def _changeable(code: int, length: int, bits: dict[int, int]) -> bytes:
    mask = bytearray(length)
    for index, value in bits.items():
        mask[index] = value
    return bytes(mask)


MODE_PAGES: dict[int, ModePageSpec] = {
    spec.code: spec for spec in (
        ModePageSpec(ModePage.CACHING, 20, _render_caching, _changeable(ModePage.CACHING, 20, {2: WCE}),
                     _apply_caching, _narrow_caching),
        ModePageSpec(ModePage.CONTROL, 12, _render_control,
                     _changeable(ModePage.CONTROL, 12, {2: D_SENSE, 4: SWP}), _apply_control),
        ModePageSpec(ModePage.INFORMATIONAL_EXCEPTIONS_CONTROL, 12, _render_informational_exceptions,
                     bytes(12), lambda state, page: None),
    )
}


def render_changeable(spec: ModePageSpec, limits: ModeLimits) -> bytes:
    """The changeable-values form of a page on a LU with ``limits``: header plus the mask
    (SPC-4 6.11.2, PC=01b)."""
    page = bytearray(spec.changeable_for(limits))
    page[0] = spec.code
    page[1] = spec.length - 2
    return bytes(page)
