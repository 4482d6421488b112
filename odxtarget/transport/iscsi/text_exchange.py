"""One connection's Text Request / Text Response exchange (RFC 7143 11.10, 11.11), bounded.

Theory of operation
-------------------
A connection carries at most one text exchange at a time; it is keyed by its Initiator Task
Tag. Its request may arrive in several PDUs with the C bit set (RFC 7143 11.10.2): each is
answered with an empty, non-final Text Response carrying our Target Transfer Tag, and the text
is collected up to ``max_text_bytes`` in all. Past that bound the exchange is refused with a
Reject (protocol error) and every later PDU of it, up to the one without the C bit, is refused
the same way, so a peer streaming continuations gets nothing buffered. A long answer goes out in
pieces of at most MaxXmitDataSegmentLength (RFC 7143 11.11.2), each fetched by an empty Text
Request carrying the Target Transfer Tag of the previous piece.

A Text Request with the reserved TTT and a new ITT starts a new exchange and drops whatever
the previous one had pending (RFC 7143 11.10.6: an initiator has one outstanding text
exchange per connection). Pure: the connection supplies the negotiation function, the TTTs
and the send size, and turns each ``TextAction`` into a PDU.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from odxtarget.transport.iscsi.pdu import RESERVED_TAG, RejectReason, TextRequest


class TextActionKind(enum.Enum):
    RESPOND = "respond"     # a Text Response
    REJECT = "reject"       # a Reject PDU carrying the request's header


@dataclass(frozen=True, slots=True)
class TextAction:
    """What the connection sends for one Text Request."""

    kind: TextActionKind
    data: bytes = b""
    final: bool = True
    cont: bool = False
    target_transfer_tag: int = RESERVED_TAG
    reject_reason: int = 0
    why: str = ""           # for the log line of a Reject


@dataclass(slots=True)
class _Exchange:
    initiator_task_tag: int
    target_transfer_tag: int
    request: bytearray
    answer_rest: bytes = b""
    refused: bool = False


class TextExchange:
    """See the module docstring.

    Args:
        max_text_bytes: the most request text one exchange may collect.
        answer: turns a whole request text into the answer text; None when it is malformed.
        allocate_ttt: hands out a Target Transfer Tag unique on the connection.
        send_limit: the initiator's MaxRecvDataSegmentLength, our send limit (it may change
            with the answer itself, RFC 7143 13.12).
    """

    def __init__(self, max_text_bytes: int, answer: Callable[[bytes], bytes | None],
                 allocate_ttt: Callable[[], int], send_limit: Callable[[], int]):
        self.max_text_bytes = max_text_bytes
        self._answer = answer
        self._allocate_ttt = allocate_ttt
        self._send_limit = send_limit
        self._current: _Exchange | None = None

    @property
    def pending(self) -> bool:
        """An exchange waits for more request text or for its answer to be fetched."""
        return self._current is not None

    def receive(self, request: TextRequest) -> TextAction:
        """Handle one Text Request that reached its CmdSN turn."""
        itt, ttt = request.initiator_task_tag, request.target_transfer_tag
        current = self._current
        if current is not None and current.initiator_task_tag != itt:
            current = self._current = None      # a new exchange replaces the old one
        if current is None:
            if ttt != RESERVED_TAG:
                return _reject(RejectReason.INVALID_PDU_FIELD, f"Text Request with unknown TTT {ttt:#x}")
            current = self._current = _Exchange(itt, RESERVED_TAG, bytearray())
        elif ttt not in (RESERVED_TAG, current.target_transfer_tag):
            self._current = None
            return _reject(RejectReason.INVALID_PDU_FIELD,
                           f"Text Request TTT {ttt:#x}, expected {current.target_transfer_tag:#x}")
        if current.refused:
            if not request.cont:
                self._current = None
            return _reject(RejectReason.PROTOCOL_ERROR, f"continuation of a refused text exchange (ITT {itt:#x})")
        if current.answer_rest:
            return self._next_piece(current)
        if len(current.request) + len(request.data) > self.max_text_bytes:
            current.request = bytearray()
            if request.cont:
                current.refused = True
            else:
                self._current = None
            return _reject(RejectReason.PROTOCOL_ERROR,
                           f"text exchange longer than {self.max_text_bytes} bytes (ITT {itt:#x})")
        current.request += request.data
        if request.cont:
            current.target_transfer_tag = self._allocate_ttt()
            return TextAction(TextActionKind.RESPOND, final=False, target_transfer_tag=current.target_transfer_tag)
        text = bytes(current.request)
        current.request = bytearray()
        answer = self._answer(text)
        if answer is None:
            self._current = None
            return _reject(RejectReason.PROTOCOL_ERROR, "malformed Text Request")
        current.answer_rest = answer
        return self._next_piece(current)

    def _next_piece(self, current: _Exchange) -> TextAction:
        limit = self._send_limit()
        piece, rest = current.answer_rest[:limit], current.answer_rest[limit:]
        if not rest:
            self._current = None
            return TextAction(TextActionKind.RESPOND, data=piece)
        current.answer_rest = rest
        current.target_transfer_tag = self._allocate_ttt()
        return TextAction(TextActionKind.RESPOND, data=piece, final=False, cont=True,
                          target_transfer_tag=current.target_transfer_tag)


def _reject(reason: int, why: str) -> TextAction:
    return TextAction(TextActionKind.REJECT, reject_reason=reason, why=why)
