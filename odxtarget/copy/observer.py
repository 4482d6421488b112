"""A Backend proxy that reports writes to a logical unit, so live tokens can be cancelled.

The copy manager wraps each attached LU's backend (``lu.backend = ObservingBackend(...)``).
Every handler of the core writes through ``lu.backend.write`` / ``deallocate`` (WRITE,
WRITE SAME, UNMAP, COMPARE AND WRITE, ORWRITE, WRITE AND VERIFY), so this sees them all
without a hook in the core. While the LU has no live (cancel-on-write) token, ``write`` and
``deallocate`` are the inner backend's own bound methods: the hot path pays nothing.
"""

from __future__ import annotations

from typing import Callable


class ObservingBackend:
    def __init__(self, inner, on_change: Callable[[int, int], None]):
        self._on_change = on_change
        self.watching = False
        self.replace_inner(inner)

    def replace_inner(self, inner) -> None:
        """Observe another backend from now on (the LU's storage was reopened: resize, read-only)."""
        self.inner = inner
        self.read_into = inner.read_into
        self.flush = inner.flush
        self.allocation_status = inner.allocation_status
        self.close = inner.close
        self.set_watching(self.watching)

    @property
    def size(self) -> int:
        return self.inner.size

    def set_watching(self, watching: bool) -> None:
        self.watching = watching
        if watching:
            self.write = self._observed_write
            self.deallocate = self._observed_deallocate
        else:
            self.write = self.inner.write
            self.deallocate = self.inner.deallocate

    def _observed_write(self, offset: int, data, fua: bool = False) -> None:
        self._on_change(offset, len(data) if not isinstance(data, memoryview) else data.nbytes)
        self.inner.write(offset, data, fua)

    def _observed_deallocate(self, offset: int, length: int) -> None:
        self._on_change(offset, length)
        self.inner.deallocate(offset, length)

    def __getattr__(self, name: str):
        # extents_for, paths, read_only ... of the wrapped backend.
        return getattr(self.inner, name)


def inner_backend(backend):
    """The backend behind any observing proxies."""
    while isinstance(backend, ObservingBackend):
        backend = backend.inner
    return backend
