"""POPULATE TOKEN / WRITE USING TOKEN / RRTI at the ScsiTarget.execute level, on ext4 and XFS."""

from __future__ import annotations

import os
import struct

import pytest

from odxtarget.copy.limits import CopyLimits, MiB
from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
from odxtarget.copy.token import make_zero_token
from odxtarget.scsi.types import ItNexus, Status
from tests.unit.copy.odx_helpers import NEXUS, OTHER_NEXUS, Env, information, pattern, sense_triplet
from tests.support.copy_cdbs import coa_cdb, pt_cdb, rrti_cdb, wut_cdb

ILLEGAL, COPY_ABORTED = 0x5, 0xA


def check(result, key: int, asc: int, ascq: int) -> None:
    assert result.status == Status.CHECK_CONDITION, "expected CHECK CONDITION"
    assert sense_triplet(result) == (key, asc, ascq), result.sense.hex()


def rod_files(env) -> list[str]:
    return [name for name in os.listdir(env.manager.rod_directory.path) if name.endswith(".rod")]


# -- copies -------------------------------------------------------------------------------------

def test_copy_within_and_across_luns(env):
    env.add_lu(0)
    env.add_lu(1)
    data = pattern(256 * 512, 1)
    env.write(0, 0, data)
    token = env.token(0, [(0, 256)])
    env.ok(wut_cdb(2, 552 + 0), build_write_using_token_list(token, [(1000, 256)]), lun=0)
    assert env.read(0, 1000, 256) == data
    assert env.write_using(1, token, [(10, 256)], list_id=3).status == Status.GOOD
    assert env.read(1, 10, 256) == data


def test_multi_range_token_and_offset_into_rod(env):
    env.add_lu(0)
    env.add_lu(1)
    data = pattern(4000 * 512, 2)
    env.write(0, 0, data)
    source = [(3000, 7), (10, 100), (500, 1)]     # ROD = 108 blocks in this order
    token = env.token(0, source)
    rod = b"".join(data[lba * 512:(lba + count) * 512] for lba, count in source)
    env.ok(wut_cdb(2, 568), build_write_using_token_list(token, [(50, 30), (7, 40)], offset_into_rod=5), lun=1)
    assert env.read(1, 50, 30) + env.read(1, 7, 40) == rod[5 * 512:75 * 512]


def test_rrti_after_populate_token_byte_for_byte(env):
    env.add_lu(0)
    assert env.populate(0, [(0, 16), (100, 8)], list_id=0x101).status == Status.GOOD
    info = bytes(env.ok(rrti_cdb(0x101)).data_in)
    assert len(info) == 550
    assert struct.unpack_from(">IBBHIBBBBQH", info, 0) == (546, 0x10, 0x01, 0, 0xFFFFFFFE, 0, 0, 0, 0xF1, 24, 0)
    assert info[26:32] == bytes(6)
    assert struct.unpack_from(">IH", info, 32) == (514, 0)
    token = info[38:]
    assert struct.unpack_from(">IxxH", token, 0)[1] == 0x01F8
    assert token[16] == 0xE4 and token[24:40] == env.luns[0].naa_designator
    assert int.from_bytes(token[48:64], "big") == 24 * 512
    assert struct.unpack_from(">I", token, 96)[0] == 512
    # results are delivered once
    check(env.run(rrti_cdb(0x101)), ILLEGAL, 0x24, 0x00)


def test_rrti_after_write_using_token_is_36_bytes(env):
    env.add_lu(0)
    token = env.token(0, [(0, 8)])
    assert env.write_using(0, token, [(64, 8)], list_id=9).status == Status.GOOD
    info = bytes(env.ok(rrti_cdb(9)).data_in)
    assert info == struct.pack(">IBBHIBBBBQH6xI", 32, 0x11, 0x01, 0, 0xFFFFFFFE, 0, 0, 0, 0xF1, 8, 0, 0)


def test_rrti_respects_allocation_length_and_zero_discards(env):
    env.add_lu(0)
    env.populate(0, [(0, 8)], list_id=5)
    assert len(env.ok(rrti_cdb(5, allocation=40)).data_in) == 40
    env.populate(0, [(0, 8)], list_id=6)
    assert len(env.ok(rrti_cdb(6, allocation=0)).data_in) == 0
    check(env.run(rrti_cdb(6)), ILLEGAL, 0x24, 0x00)


def test_receive_copy_status_lid4_has_no_token_part(env):
    env.add_lu(0)
    env.populate(0, [(0, 8)], list_id=5)
    info = bytes(env.ok(rrti_cdb(5, action=0x05)).data_in)
    assert len(info) == 32 and info[4] == 0x10 and info[5] == 0x01 and struct.unpack_from(">Q", info, 16)[0] == 8


def test_results_are_per_nexus(env):
    env.add_lu(0)
    env.populate(0, [(0, 8)], list_id=5)
    check(env.run(rrti_cdb(5), nexus=OTHER_NEXUS), ILLEGAL, 0x24, 0x00)
    assert env.run(rrti_cdb(5)).status == Status.GOOD


def test_nexus_loss_drops_results(env):
    env.add_lu(0)
    env.populate(0, [(0, 8)], list_id=5)
    env.manager.nexus_lost(NEXUS)
    check(env.run(rrti_cdb(5)), ILLEGAL, 0x24, 0x00)


# -- point-in-time semantics -----------------------------------------------------------------------

def test_xfs_snapshot_token_keeps_old_data(xfs_env):
    env = xfs_env
    env.add_lu(0)
    old = pattern(2048 * 512, 3)
    env.write(0, 0, old)
    token = env.token(0, [(0, 1024), (1030, 1000)])
    assert struct.unpack_from(">I", token, 0)[0] == 0x00800000
    assert len(rod_files(env)) == 1
    env.write(0, 0, pattern(2048 * 512, 4))            # overwrite all of the source
    env.ok(wut_cdb(2, 552), build_write_using_token_list(token, [(4000, 2024)]))
    assert env.read(0, 4000, 2024) == old[:1024 * 512] + old[1030 * 512:2030 * 512]
    counters = env.manager.counters("lu0")
    assert counters["snapshot_tokens"] == 1 and counters["bytes"].get("reflink", 0) > 0


def test_xfs_unaligned_ranges_copy_heads_and_tails(xfs_env):
    env = xfs_env
    env.add_lu(0)
    old = pattern(600 * 512, 5)
    env.write(0, 0, old)
    token = env.token(0, [(3, 301)])                   # not 4 KiB aligned at either end
    env.write(0, 0, bytes(600 * 512))
    env.ok(wut_cdb(2, 552), build_write_using_token_list(token, [(1001, 301)]))
    assert env.read(0, 1001, 301) == old[3 * 512:304 * 512]


def test_ext4_token_is_cancelled_by_writes_to_its_source(ext4_env):
    env = ext4_env
    env.add_lu(0)
    token = env.token(0, [(100, 50)])
    assert struct.unpack_from(">I", token, 0)[0] == 0x00800001
    env.write(0, 0, pattern(100 * 512, 1))             # next to, not inside, the range
    assert env.write_using(0, token, [(1000, 10)]).status == Status.GOOD
    env.write(0, 149, pattern(512, 2))                 # last block of the range
    check(env.write_using(0, token, [(1000, 10)], list_id=3), ILLEGAL, 0x23, 0x08)


@pytest.mark.parametrize("change", ["unmap", "write_same", "compare_and_write", "resize"])
def test_ext4_token_cancelled_by_other_changes(ext4_env, change):
    env = ext4_env
    lu = env.add_lu(0)
    env.write(0, 120, pattern(512, 9))
    token = env.token(0, [(100, 50)])
    if change == "unmap":
        data = struct.pack(">HH4xQI4x", 22, 16, 120, 1)
        env.ok(bytes((0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0)), data)
    elif change == "write_same":
        env.ok(struct.pack(">BBQIBB", 0x93, 0, 140, 4, 0, 0), bytes(512))
    elif change == "compare_and_write":
        env.ok(struct.pack(">BBQ3xBBB", 0x89, 0, 120, 1, 0, 0), pattern(512, 9) + pattern(512, 10))
    else:
        lu.block_count -= 8                            # what capacity_changed() does after a shrink
    check(env.write_using(0, token, [(1000, 10)]), ILLEGAL, 0x23, 0x08)


def test_change_vulnerable_requested_on_xfs(xfs_env):
    env = xfs_env
    env.add_lu(0)
    token = env.token(0, [(0, 8)], rod_type=0x00800001)
    assert struct.unpack_from(">I", token, 0)[0] == 0x00800001 and not rod_files(env)


# -- zero token --------------------------------------------------------------------------------

def test_zero_token_zeroes_without_populate(env):
    env.add_lu(0, block_size=4096)
    env.write(0, 0, pattern(64 * 4096, 6))
    result = env.write_using(0, make_zero_token(), [(3, 5), (40, 10)])
    assert result.status == Status.GOOD
    data = env.read(0, 0, 64)
    expected = bytearray(pattern(64 * 4096, 6))
    expected[3 * 4096:8 * 4096] = bytes(5 * 4096)
    expected[40 * 4096:50 * 4096] = bytes(10 * 4096)
    assert data == bytes(expected)
    assert env.manager.counters("lu0")["bytes"]["zero"] == 15 * 4096


def test_zero_token_on_512_byte_blocks_keeps_the_neighbours_of_unaligned_ranges(env):
    """Ranges that start and end inside a filesystem block: the blocks around them keep their
    data (the partial filesystem blocks are zeroed in place, only whole ones are punched)."""
    env.add_lu(0, block_size=512)
    env.write(0, 0, pattern(64 * 512, 7))
    result = env.write_using(0, make_zero_token(), [(3, 2), (9, 30)])
    assert result.status == Status.GOOD
    expected = bytearray(pattern(64 * 512, 7))
    expected[3 * 512:5 * 512] = bytes(2 * 512)
    expected[9 * 512:39 * 512] = bytes(30 * 512)
    assert env.read(0, 0, 64) == bytes(expected)


# -- lifetime ------------------------------------------------------------------------------------

def test_inactivity_timeout_restarts_with_each_use_then_expires(env):
    env.add_lu(0)
    token = env.token(0, [(0, 8)], inactivity_timeout=60)
    env.clock.advance(50)
    assert env.write_using(0, token, [(100, 8)]).status == Status.GOOD
    env.clock.advance(50)                              # 100 s after creation, 50 after last use
    assert env.write_using(0, token, [(100, 8)], list_id=3).status == Status.GOOD
    env.clock.advance(61)
    check(env.write_using(0, token, [(100, 8)], list_id=4), ILLEGAL, 0x23, 0x07)


def test_default_inactivity_timeout_and_housekeeping_removes_rod_files(env):
    env.add_lu(0)
    token = env.token(0, [(0, 8)])
    env.clock.advance(59)
    env.manager.housekeeping()
    assert len(env.manager.tokens.active()) == 1
    env.clock.advance(2)
    env.manager.housekeeping()
    env.settle()                                       # ROD files are removed on a worker
    assert not env.manager.tokens.active() and not rod_files(env)
    check(env.write_using(0, token, [(100, 8)]), ILLEGAL, 0x23, 0x07)


def test_del_tkn_deletes_after_use(env):
    env.add_lu(0)
    token = env.token(0, [(0, 8)])
    assert env.write_using(0, token, [(100, 8)], delete_token=True).status == Status.GOOD
    env.settle()
    assert not rod_files(env)
    check(env.write_using(0, token, [(100, 8)], list_id=3), ILLEGAL, 0x23, 0x09)


def test_revoke(env):
    env.add_lu(0)
    token = env.token(0, [(0, 8)])
    assert env.manager.revoke_token(struct.unpack_from(">Q", token, 8)[0])
    check(env.write_using(0, token, [(100, 8)]), ILLEGAL, 0x23, 0x06)


def test_forged_and_corrupted_tokens(env):
    env.add_lu(0)
    token = env.token(0, [(0, 8)])
    corrupted = bytearray(token)
    corrupted[400] ^= 1
    check(env.write_using(0, bytes(corrupted), [(100, 8)]), ILLEGAL, 0x23, 0x05)
    forged = bytearray(token)
    forged[8:16] = os.urandom(8)
    check(env.write_using(0, bytes(forged), [(100, 8)], list_id=3), ILLEGAL, 0x23, 0x04)
    remote = bytearray(forged)
    remote[24:40] = os.urandom(16)
    check(env.write_using(0, bytes(remote), [(100, 8)], list_id=4), ILLEGAL, 0x23, 0x02)
    bad_length = bytearray(token)
    bad_length[6:8] = b"\x01\xf0"
    check(env.write_using(0, bytes(bad_length), [(100, 8)], list_id=5), ILLEGAL, 0x23, 0x0A)
    aur = bytearray(token)
    aur[0:4] = b"\x00\x01\x00\x00"
    check(env.write_using(0, bytes(aur), [(100, 8)], list_id=6), ILLEGAL, 0x23, 0x01)
    assert env.write_using(0, token, [(100, 8)], list_id=7).status == Status.GOOD


def test_report_all_rod_tokens(env):
    env.add_lu(0)
    first = env.token(0, [(0, 8)], list_id=1)
    second = env.token(0, [(8, 8)], list_id=2)
    data = bytes(env.ok(struct.pack(">BB8xI2x", 0x84, 0x08, 1024)).data_in)
    assert struct.unpack_from(">I", data, 0)[0] == 4 + 2 * 96
    assert {data[8:104], data[104:200]} == {first[:96], second[:96]}


# -- sense codes of POPULATE TOKEN and WRITE USING TOKEN -------------------------------------------

def test_populate_token_parameter_errors(ext4_env):
    env = ext4_env
    env.add_lu(0, size=4 * MiB)
    good = build_populate_token_list([(0, 8)])
    check(env.run(pt_cdb(1, 8), good[:8]), ILLEGAL, 0x1A, 0x00)
    assert env.run(pt_cdb(1, 0)).status == Status.GOOD
    short = bytearray(good)
    short[0:2] = struct.pack(">H", 29)
    check(env.run(pt_cdb(1, len(short)), bytes(short)), ILLEGAL, 0x26, 0x00)
    check(env.populate(0, [(0, 8)], inactivity_timeout=601), ILLEGAL, 0x26, 0x00)
    check(env.populate(0, [(0, 8)], rod_type=0x00010000), ILLEGAL, 0x26, 0x00)
    no_ranges = build_populate_token_list([])
    check(env.run(pt_cdb(1, len(no_ranges)), no_ranges), ILLEGAL, 0x26, 0x00)
    check(env.populate(0, [(index * 2, 1) for index in range(65)]), ILLEGAL, 0x26, 0x08)
    check(env.populate(0, [(0, 8), (7, 2)]), ILLEGAL, 0x26, 0x00)
    check(env.populate(0, [(0, 256 * MiB // 512 + 1)]), ILLEGAL, 0x26, 0x00)
    check(env.populate(0, [(8190, 3)]), ILLEGAL, 0x21, 0x00)
    # an incomplete last descriptor and zero-block descriptors are ignored
    ragged = build_populate_token_list([(0, 8), (100, 0)]) + b"\x00" * 7
    ragged = bytearray(ragged)
    ragged[14:16] = struct.pack(">H", 32 + 7)
    assert env.run(pt_cdb(1, len(ragged)), bytes(ragged)).status == Status.GOOD
    assert struct.unpack_from(">Q", env.ok(rrti_cdb(1)).data_in, 16)[0] == 8


def test_write_using_token_errors(ext4_env):
    env = ext4_env
    env.add_lu(0, size=4 * MiB)
    token = env.token(0, [(0, 8)])
    check(env.write_using(0, token, [(100, 8)], offset_into_rod=8), ILLEGAL, 0x26, 0x00)
    check(env.write_using(0, token, [(8190, 8)]), ILLEGAL, 0x21, 0x00)
    check(env.write_using(0, token, [(100, 4), (102, 4)]), ILLEGAL, 0x26, 0x00)
    check(env.write_using(0, token, [(index * 2, 1) for index in range(65)]), ILLEGAL, 0x26, 0x08)
    short = build_write_using_token_list(token, [(100, 8)])[:540]
    check(env.run(wut_cdb(7, len(short)), short), ILLEGAL, 0x26, 0x00)
    assert env.manager.counters("lu0")["failures"]["5/26/00"] >= 2


def test_write_using_token_errors_are_remembered_for_rrti(ext4_env):
    env = ext4_env
    env.add_lu(0)
    token = env.token(0, [(0, 8)])
    env.clock.advance(1000)
    check(env.write_using(0, token, [(100, 8)], list_id=0x44), ILLEGAL, 0x23, 0x07)
    info = bytes(env.ok(rrti_cdb(0x44)).data_in)
    assert info[5] == 0x02 and info[12] == 0x02 and info[13] == 20 and info[14] == 18
    assert info[32 + 2] & 0x0F == ILLEGAL and info[32 + 12:32 + 14] == b"\x23\x07"


def test_rod_runs_out_zero_fills_and_reports_residual(ext4_env):
    env = ext4_env
    env.add_lu(0, block_size=512)
    env.add_lu(1, block_size=4096)
    data = pattern(20 * 512, 7)
    env.write(0, 0, data)
    env.write(1, 0, pattern(8 * 4096, 8))
    token = env.token(0, [(0, 20)])                    # 10240 bytes = 2.5 destination blocks
    result = env.write_using(1, token, [(0, 4)], list_id=4)
    check(result, COPY_ABORTED, 0x0D, 0x04)
    assert information(result) == 3
    assert env.read(1, 0, 4) == data + bytes(2048) + pattern(8 * 4096, 8)[3 * 4096:4 * 4096]
    info = bytes(env.ok(rrti_cdb(4), lun=1).data_in)
    assert info[5] == 0x03 and struct.unpack_from(">Q", info, 16)[0] == 3


def test_time_budget_truncates_at_block_boundary(ext4_env):
    env = ext4_env
    env.limits = None
    small_steps = CopyLimits(background_step_bytes=64 * 1024, write_using_token_budget=3.0)
    env.manager.limits = small_steps
    env.add_lu(0, size=16 * MiB)
    data = pattern(4 * MiB, 9)
    env.write(0, 0, data)
    token = env.token(0, [(0, 8192)])
    env.clock.tick = 1.0                              # every clock reading costs a second
    result = env.write_using(0, token, [(16384, 8192)], list_id=4)
    env.clock.tick = 0.0
    check(result, COPY_ABORTED, 0x0D, 0x04)
    written = information(result)
    assert 0 < written < 8192 and written % 128 == 0
    assert env.read(0, 16384, written) == data[:written * 512]
    info = bytes(env.ok(rrti_cdb(4)).data_in)
    assert info[5] == 0x03 and struct.unpack_from(">Q", info, 16)[0] == written
    # Windows continues from there with the next offset
    rest = env.write_using(0, token, [(16384 + written, 8192 - written)], offset_into_rod=written, list_id=5)
    assert rest.status == Status.GOOD
    assert env.read(0, 16384, 8192) == data


def test_rod_space_cap_answers_insufficient_resources(xfs_mount, tmp_path):
    import tempfile

    env = Env(tempfile.mkdtemp(dir=xfs_mount),
              limits=CopyLimits(max_rod_bytes=64 * 512, max_rod_bytes_per_initiator=64 * 512))
    try:
        env.add_lu(0)
        assert env.populate(0, [(0, 64)], list_id=1).status == Status.GOOD
        check(env.populate(0, [(64, 1)], list_id=2), ILLEGAL, 0x55, 0x0C)
        env.ok(rrti_cdb(1))
    finally:
        env.close()


def test_startup_cleanup_removes_stale_rod_files(env):
    stale = os.path.join(env.manager.rod_directory.path, "00000000deadbeef.rod")
    with open(stale, "wb") as handle:
        handle.write(b"x")
    assert env.manager.startup_cleanup() == 1 and not os.path.exists(stale)


# -- IMMED and COPY OPERATION ABORT --------------------------------------------------------------

def immed_env(env):
    env.manager.limits = CopyLimits(background_step_bytes=64 * 1024)
    env.add_lu(0, size=16 * MiB)
    data = pattern(4 * MiB, 10)
    env.write(0, 0, data)
    return data


def test_immed_write_runs_in_background_with_progress(env):
    data = immed_env(env)
    token = env.token(0, [(0, 8192)])
    assert env.write_using(0, token, [(16384, 8192)], list_id=7, immed=True).status == Status.GOOD
    assert env.manager.has_pending_work()
    check(env.write_using(0, token, [(0, 1)], list_id=7), ILLEGAL, 0x00, 0x16)
    counts = []
    while True:
        info = bytes(env.ok(rrti_cdb(7)).data_in)
        status = info[5]
        delay = struct.unpack_from(">I", info, 8)[0]
        counts.append(struct.unpack_from(">Q", info, 16)[0])
        if status != 0x12:
            break
        assert 50 <= delay <= 1000
        env.clock.advance(0.01)
        env.workers.run_one()                          # the next step's completion
    assert status == 0x01 and delay == 0xFFFFFFFE and counts[-1] == 8192
    assert counts == sorted(counts) and len(set(counts)) > 3
    assert env.read(0, 16384, 8192) == data


def test_copy_operation_abort_terminates_background_copy(env):
    immed_env(env)
    token = env.token(0, [(0, 8192)])
    env.write_using(0, token, [(16384, 8192)], list_id=7, immed=True)
    env.workers.run_one()
    env.ok(coa_cdb(7))
    assert not env.manager.has_pending_work()
    info = bytes(env.ok(rrti_cdb(7)).data_in)
    assert info[5] == 0x60 and info[12] == 0x40 and struct.unpack_from(">I", info, 8)[0] == 0xFFFFFFFE
    check(env.run(coa_cdb(99)), ILLEGAL, 0x24, 0x00)
    # the token survives the abort
    assert env.write_using(0, token, [(16384, 8)], list_id=8).status == Status.GOOD


def test_immed_populate_token_reports_errors_only_through_rrti(ext4_env):
    env = ext4_env
    env.add_lu(0)
    env.manager.tokens.max_tokens = 0
    assert env.populate(0, [(0, 8)], list_id=3, immed=True).status == Status.GOOD
    info = bytes(env.ok(rrti_cdb(3)).data_in)
    assert info[5] == 0x02 and info[32 + 12:32 + 14] == b"\x55\x0c"
    assert struct.unpack_from(">I", info, 32 + info[13])[0] == 0


def test_background_copy_from_cancelled_live_token_stops(ext4_env):
    env = ext4_env
    immed_env(env)
    token = env.token(0, [(0, 8192)])
    env.write_using(0, token, [(16384, 8192)], list_id=7, immed=True)
    env.workers.run_one()
    env.write(0, 5000, pattern(512, 1))               # the source changes under the copy
    env.settle()
    info = bytes(env.ok(rrti_cdb(7)).data_in)
    assert info[5] == 0x03 and info[32 + 2] & 0x0F == COPY_ABORTED
    assert 0 < struct.unpack_from(">Q", info, 16)[0] < 8192


# -- a nexus shared by every initiator (LIO/TCMU) ------------------------------------------------

SHARED = ItNexus("tcmu:lu0,i,0x0", "lio,t,0x1", shared=True)


def _shared_env(env) -> None:
    env.add_lu(0)
    env.write(0, 0, pattern(64 * 512, 21))
    env.run(bytes(6), nexus=SHARED)          # TEST UNIT READY: the shared nexus' power-on UA


def test_shared_nexus_keeps_an_unretrieved_token_id_in_use(env):
    """Host B's POPULATE TOKEN must not replace host A's token that A has not read yet: on a
    shared nexus RRTI cannot tell A from B, so A would get B's token."""
    _shared_env(env)
    assert env.populate(0, [(0, 8)], list_id=5, nexus=SHARED).status == Status.GOOD
    check(env.populate(0, [(32, 8)], list_id=5, nexus=SHARED), ILLEGAL, 0x00, 0x16)
    token = bytes(env.ok(rrti_cdb(5), nexus=SHARED).data_in)[-512:]
    assert env.write_using(0, token, [(100, 8)], list_id=6, nexus=SHARED).status == Status.GOOD
    assert env.read(0, 100, 8) == env.read(0, 0, 8)          # A's ranges, not B's
    # retrieved: the id is free again
    assert env.populate(0, [(32, 8)], list_id=5, nexus=SHARED).status == Status.GOOD


def test_shared_nexus_frees_an_unretrieved_token_id_after_retention(env):
    _shared_env(env)
    assert env.populate(0, [(0, 8)], list_id=5, nexus=SHARED).status == Status.GOOD
    env.clock.advance(env.limits.result_retention + 1)
    assert env.populate(0, [(32, 8)], list_id=5, nexus=SHARED).status == Status.GOOD


def test_shared_nexus_reuses_ids_without_a_pending_token(env):
    """Completed WRITE USING TOKEN results and failed POPULATE TOKENs hold no token: reusable."""
    _shared_env(env)
    token = env.token(0, [(0, 8)], list_id=1, nexus=SHARED)
    assert env.write_using(0, token, [(100, 8)], list_id=7, nexus=SHARED).status == Status.GOOD
    assert env.write_using(0, token, [(200, 8)], list_id=7, nexus=SHARED).status == Status.GOOD
    check(env.populate(0, [(1 << 40, 8)], list_id=8, nexus=SHARED), ILLEGAL, 0x21, 0x00)
    assert env.populate(0, [(0, 8)], list_id=8, nexus=SHARED).status == Status.GOOD


def test_per_initiator_nexus_still_replaces_completed_results(env):
    """SPC-4 on a real nexus: reusing a completed id replaces its results."""
    env.add_lu(0)
    env.write(0, 0, pattern(64 * 512, 22))
    assert env.populate(0, [(0, 8)], list_id=5).status == Status.GOOD
    assert env.populate(0, [(32, 8)], list_id=5).status == Status.GOOD
