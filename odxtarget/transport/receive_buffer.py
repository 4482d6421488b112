"""The buffer a connection's socket reads into (``asyncio.BufferedProtocol``).

With a plain ``asyncio.Protocol`` every read makes a new ``bytes`` object of up to the read size:
for a write workload that is one allocation and one copy per 256 KiB received, and allocations
that large come from fresh pages (docs/execution.md, "Receiving data"). A ``BufferedProtocol``
lets the socket read straight into a buffer we keep.

The framer hands PDUs out as views into what it was fed, and a PDU may be held past the read
(a stalled connection's queue). A ``bytearray`` that any view still refers to cannot be resized,
so ``ReceiveBuffer`` asks exactly that before reusing its buffer, and starts a new one otherwise:
a held PDU never sees its bytes overwritten.
"""

from __future__ import annotations

#: Bytes per read before full feature phase: login and text PDUs are small (RFC 7143 13.12).
SMALL_RECEIVE_BYTES = 16 * 1024
#: Bytes per read in full feature phase: a 256 KiB Data-Out segment in one read.
LARGE_RECEIVE_BYTES = 256 * 1024


def is_referenced(buffer: bytearray) -> bool:
    """A memoryview still refers to ``buffer`` (resizing a bytearray with exports fails)."""
    try:
        buffer.append(0)
    except BufferError:
        return True
    del buffer[-1]
    return False


class ReceiveBuffer:
    """One connection's reusable read buffer."""

    __slots__ = ("_buffer",)

    def __init__(self, size: int = SMALL_RECEIVE_BYTES):
        self._buffer = bytearray(size)

    @property
    def size(self) -> int:
        return len(self._buffer)

    def writable(self, size: int) -> memoryview:
        """Where the next read goes: the kept buffer of ``size`` bytes, or a new one when a
        PDU still refers to the kept one or the size changed."""
        buffer = self._buffer
        if len(buffer) != size or is_referenced(buffer):
            buffer = self._buffer = bytearray(size)
        return memoryview(buffer)

    def release(self) -> None:
        """Give the memory back when the connection ends (its protocol object may live on in
        a reference cycle until the garbage collector's next full pass)."""
        self._buffer = bytearray()

    def received(self, length: int) -> memoryview:
        """The ``length`` bytes the last read put at the start of the buffer."""
        return memoryview(self._buffer)[:length]
