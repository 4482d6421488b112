"""Random sequences of WRITE, POPULATE TOKEN and WRITE USING TOKEN (multi-range) on two LUs,
on ext4 and on an XFS reflink mount, checked against an in-memory model.

Model: each LU is a bytearray. A token remembers its ROD bytes as of POPULATE TOKEN and,
when it is a live (change vulnerable, 00800001h) token, which LU ranges it depends on; a
later write to those ranges makes the model expect TOKEN CANCELLED (23h/08h), whether a WRITE
or the blocks a WRITE USING TOKEN wrote (a copy announces each step's destination to the
LU's change listeners before it writes, so blocks it never reached cancel nothing). Snapshot
(00800000h) tokens keep their bytes whatever happens to the source.
"""

from __future__ import annotations

import struct
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from odxtarget.scsi.types import Status
from tests.unit.copy.odx_helpers import Env, pattern, sense_triplet

BLOCK = 512
BLOCKS = 512
SIZE = BLOCK * BLOCKS


@pytest.fixture(scope="module", params=["ext4", "xfs"])
def base_dir(request):
    if request.param == "ext4":
        with tempfile.TemporaryDirectory() as directory:
            yield directory
        return
    with tempfile.TemporaryDirectory(dir=request.getfixturevalue("xfs_mount")) as directory:
        yield directory


def ranges_strategy(max_ranges: int = 4):
    """Non-overlapping (lba, blocks) lists in random order."""
    @st.composite
    def build(draw):
        count = draw(st.integers(1, max_ranges))
        cuts = sorted(draw(st.sets(st.integers(0, BLOCKS), min_size=2 * count, max_size=2 * count)))
        pairs = [(cuts[2 * i], cuts[2 * i + 1] - cuts[2 * i]) for i in range(count)]
        pairs = [pair for pair in pairs if pair[1] > 0] or [(0, 1)]
        return draw(st.permutations(pairs))
    return build()


operation = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 1), st.integers(0, BLOCKS - 1), st.integers(1, 64),
              st.integers(0, 255)),
    st.tuples(st.just("populate"), st.integers(0, 1), ranges_strategy()),
    st.tuples(st.just("wut"), st.integers(0, 1), st.integers(0, 7), ranges_strategy(), st.integers(0, 16)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(operation, min_size=1, max_size=12))
def test_copy_manager_matches_model(base_dir, steps):
    env = Env(tempfile.mkdtemp(dir=base_dir))
    try:
        model = [bytearray(SIZE), bytearray(SIZE)]
        for lun in (0, 1):
            env.add_lu(lun, size=SIZE)
        tokens = []   # (token bytes, rod bytes, lun, ranges, live, cancelled-flag holder)
        list_id = 100
        for step in steps:
            list_id += 1
            kind = step[0]
            if kind == "write":
                _, lun, lba, count, seed = step
                count = min(count, BLOCKS - lba)
                data = pattern(count * BLOCK, seed)
                env.write(lun, lba, data)
                model[lun][lba * BLOCK:(lba + count) * BLOCK] = data
                for entry in tokens:
                    if entry[4] and entry[2] == lun and any(a < lba + count and lba < a + n for a, n in entry[3]):
                        entry[5][0] = True
            elif kind == "populate":
                _, lun, ranges = step
                token = env.token(lun, ranges, list_id=list_id)
                rod = b"".join(bytes(model[lun][a * BLOCK:(a + n) * BLOCK]) for a, n in ranges)
                live = struct.unpack_from(">I", token, 0)[0] == 0x00800001
                tokens.append((token, rod, lun, ranges, live, [False]))
            elif tokens:
                _, lun, pick, ranges, offset = step
                token, rod, source_lun, source_ranges, live, cancelled = tokens[pick % len(tokens)]
                result = env.write_using(lun, token, ranges, list_id=list_id, offset_into_rod=offset)
                if offset * BLOCK >= len(rod):
                    assert sense_triplet(result) == (5, 0x26, 0x00)
                    continue
                if cancelled[0]:
                    assert sense_triplet(result) == (5, 0x23, 0x08)
                    continue
                stream = rod[offset * BLOCK:]
                written = 0
                written_ranges = []
                for lba, count in ranges:
                    take = stream[:count * BLOCK]
                    if not take:
                        break
                    blocks = -(-len(take) // BLOCK)
                    take = take + bytes(blocks * BLOCK - len(take))
                    model[lun][lba * BLOCK:(lba + blocks) * BLOCK] = take
                    written_ranges.append((lba, blocks))
                    stream = stream[count * BLOCK:]
                    written += blocks
                    if blocks < count:
                        break
                requested = sum(count for _, count in ranges)
                if written < requested:
                    assert sense_triplet(result) == (0xA, 0x0D, 0x04)
                    assert struct.unpack_from(">I", result.sense, 3)[0] == written
                else:
                    assert result.status == Status.GOOD, result.sense.hex()
                for entry in tokens:  # a WUT cancels every live token over what it wrote
                    if entry[4] and entry[2] == lun and any(
                            a < lba + n and lba < a + m for a, m in entry[3] for lba, n in written_ranges):
                        entry[5][0] = True
        for lun in (0, 1):
            assert env.read(lun, 0, BLOCKS) == bytes(model[lun]), f"LUN {lun} differs from the model"
    finally:
        env.close()
