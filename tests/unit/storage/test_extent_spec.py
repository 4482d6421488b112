"""Storage takes any object shaped like an extent (path, offset, length), the configuration's
ExtentConfig among them, and does not import the configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from odxtarget.config import ExtentConfig
from odxtarget.storage.extents import FileExtentBackend, resolve_extent_lengths

REPO = Path(__file__).resolve().parents[3]


class PlainExtent(NamedTuple):
    path: str
    offset: int
    length: int | None


def test_any_object_with_path_offset_and_length_is_an_extent(tmp_path):
    extents = [PlainExtent(str(tmp_path / "a.img"), 4096, 8192),
               ExtentConfig(str(tmp_path / "b.img"), 0, None)]
    assert resolve_extent_lengths(extents, 3 * 8192) == [8192, 2 * 8192]
    backend = FileExtentBackend(extents, 3 * 8192)
    try:
        backend.write(8192 - 512, b"x" * 1024)
        buffer = bytearray(1024)
        backend.read_into(8192 - 512, memoryview(buffer))
        assert bytes(buffer) == b"x" * 1024
    finally:
        backend.close()


def test_storage_does_not_import_the_configuration():
    code = "import sys, odxtarget.storage.extents; print('odxtarget.config' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                               timeout=60, check=True)
    assert completed.stdout.strip() == "False"
