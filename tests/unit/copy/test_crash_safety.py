"""Crash safety (docs/odx.md, "Crash safety"): SIGKILL a process in the middle of a big WRITE USING TOKEN; every
destination block must then hold its old or its new contents, never anything else."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BLOCK = 512
BLOCKS = 256 * 1024            # 128 MiB
SOURCE_LBA = 0
DESTINATION_LBA = BLOCKS


def block(index: int, tag: bytes) -> bytes:
    return struct.pack(">Q", index) + tag * (BLOCK - 8)


CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    from odxtarget.storage import copy_strategies
    from tests.unit.copy.odx_helpers import Env
    from odxtarget.copy.limits import CopyLimits
    method = {method!r}
    if method == "read_write":
        def no_copy_file_range(*args):
            raise OSError(18, "forced fallback")
        os.copy_file_range = no_copy_file_range
    calls = [0]
    original_write = os.pwritev
    original_cfr = os.copy_file_range
    def announce():
        calls[0] += 1
        if calls[0] == 2:
            sys.stdout.write("mid\\n"); sys.stdout.flush()
    # count only writes that completed, so "mid" means some new blocks are surely on disk
    def pwritev(*args):
        result = original_write(*args); announce(); return result
    def copy_file_range(*args):
        result = original_cfr(*args); announce(); return result
    os.pwritev = pwritev
    os.copy_file_range = copy_file_range
    env = Env({directory!r}, limits=CopyLimits(write_using_token_budget=600.0))
    env.add_lu(0, size={size})
    token = env.token(0, [({source}, {blocks})])
    calls[0] = 0
    sys.stdout.write("start\\n"); sys.stdout.flush()
    result = env.write_using(0, token, [({destination}, {blocks})])
    sys.stdout.write("done %d\\n" % result.status); sys.stdout.flush()
""")


@pytest.mark.parametrize("method", ["read_write", "copy_file_range"])
def test_killed_copy_leaves_old_or_new_blocks(fs_dir, method):
    image = os.path.join(fs_dir, "lu0.img")
    with open(image, "wb") as handle:
        for chunk_start in range(0, 2 * BLOCKS, 4096):
            handle.write(b"".join(block(index, b"N" if index < BLOCKS else b"O")
                                  for index in range(chunk_start, chunk_start + 4096)))
    code = CHILD.format(repo=REPO, method=method, directory=fs_dir, size=2 * BLOCKS * BLOCK,
                        source=SOURCE_LBA, destination=DESTINATION_LBA, blocks=BLOCKS)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        lines = []
        for line in child.stdout:
            lines.append(line.strip())
            if line.startswith("mid") or line.startswith("done"):
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert "start" in lines, lines
    new = old = 0
    with open(image, "rb") as handle:
        handle.seek(DESTINATION_LBA * BLOCK)
        for index in range(BLOCKS):
            data = handle.read(BLOCK)
            if data == block(index, b"N"):
                new += 1
            elif data == block(index + BLOCKS, b"O"):
                old += 1
            else:
                pytest.fail(f"destination block {index} holds foreign bytes: {data[:16].hex()}")
    assert new + old == BLOCKS and new > 0
