"""An in-memory back end, for unit tests of the core and for quick experiments."""

from __future__ import annotations

from odxtarget.storage.backend import AllocationRun, CompareReadError
from odxtarget.storage.work import StorageCall


class MemoryBackend:
    """A bytearray with a per-block allocation map, so provisioning can be tested too."""

    def __init__(self, size: int, granularity: int = 4096):
        self._data = bytearray(size)
        self._granularity = granularity
        self._mapped: set[int] = set()
        self.flushes = 0
        self.fua_writes = 0

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def lane(self) -> tuple:
        return ("memory", id(self))

    @property
    def can_deallocate(self) -> bool:
        return True

    def read_into(self, offset: int, buf: memoryview) -> None:
        buf[:] = memoryview(self._data)[offset:offset + len(buf)]

    def write_work(self, offset: int, data, fua: bool = False) -> StorageCall:
        return StorageCall(self.lane, self.write, (offset, data, fua))

    def read_work(self, offset: int, buf) -> StorageCall:
        return StorageCall(self.lane, self.read_into, (offset, buf))

    def try_read_into(self, offset: int, buf: memoryview) -> bool:
        """Memory never waits for a disk."""
        self.read_into(offset, buf)
        return True

    def compare_and_write(self, offset: int, expected, data, fua: bool = False) -> int:
        """Atomic because nothing else runs between the compare and the write here."""
        current = bytearray(len(expected))
        try:
            self.read_into(offset, memoryview(current))
        except OSError as error:
            raise CompareReadError(error.errno, error.strerror, error.filename) from error
        expected = bytes(expected)
        if current != expected:
            return next(index for index, (a, b) in enumerate(zip(current, expected)) if a != b)
        self.write(offset, data, fua)
        return -1

    def write(self, offset: int, data, fua: bool = False) -> None:
        self._data[offset:offset + len(data)] = data
        g = self._granularity
        self._mapped.update(range(offset // g, (offset + len(data) + g - 1) // g))
        if fua:
            self.fua_writes += 1

    def flush(self, offset: int = 0, length: int | None = None) -> None:
        self.flushes += 1

    def deallocate(self, offset: int, length: int) -> None:
        self._data[offset:offset + length] = bytes(length)
        g = self._granularity
        first = (offset + g - 1) // g
        last = (offset + length) // g
        self._mapped.difference_update(range(first, last))

    def allocation_status(self, offset: int, length: int) -> list[AllocationRun]:
        g = self._granularity
        runs: list[AllocationRun] = []
        pos, end = offset, offset + length
        while pos < end:
            mapped = (pos // g) in self._mapped
            nxt = min(end, (pos // g + 1) * g)
            if runs and runs[-1].mapped == mapped:
                last = runs.pop()
                runs.append(AllocationRun(last.offset, last.length + nxt - pos, mapped))
            else:
                runs.append(AllocationRun(pos, nxt - pos, mapped))
            pos = nxt
        return runs

    def resize(self, size: int) -> None:
        if size < len(self._data):
            del self._data[size:]
        else:
            self._data.extend(bytes(size - len(self._data)))

    def close(self) -> None:
        pass
