"""Third-party copy through LIO: what the kernel's initiator tools see, and copies they drive.

odxtarget serves both LUNs of TARGET_IQN behind LIO; open-iscsi attached them as /dev/sdX and
/dev/sgN. Every copy test snapshots both LUNs' backing files before and after, and checks the
copied blocks and that no other block changed.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

from tests.vm.guest_support import (BLOCK_SIZE, LIO_PORT, MIB, TARGET_IQN, assert_unchanged_outside,
                                    blocks, digest, direct_write, image_bytes, run)

ODX_LBA_SHIFT = 8                # ddpt 0.97's misplaced range descriptors (see the ddpt tests)
NUMBER_OF_BLOCKS_BITS = 24


@pytest.fixture(scope="module")
def disks(iscsi_disks):
    """Both LUNs filled with random data through the initiator (so odxtarget wrote them)."""
    for disk in iscsi_disks.values():
        for offset in range(0, disk.size, 8 * MIB):
            direct_write(disk.block, offset, os.urandom(min(8 * MIB, disk.size - offset)))
    return iscsi_disks


def odxtarget_copy(*arguments: str) -> str:
    completed = run(sys.executable, "-m", "odxtarget", "copy", *arguments, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


# -- what the initiator tools decode -------------------------------------------------------------

def test_standard_inquiry_sets_3pc(disks):
    output = run("sg_inq", disks[0].generic).stdout
    assert re.search(r"\b3PC=1\b", output), output


def test_sg_vpd_decodes_the_third_party_copy_page(disks):
    output = run("sg_vpd", "-p", "0x8f", disks[0].generic).stdout
    assert "Third party copy" in output or "third party copy" in output.lower(), output
    assert "Block Device ROD Token Limits" in output, output
    assert "Supported commands" in output or "supported commands" in output.lower(), output


def test_ddptctl_info_reads_the_rod_token_limits(disks):
    completed = run("ddptctl", "--info", disks[0].generic, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "3PC (third party copy) bit set" in output, output
    assert "Block Device ROD Token Limits" in output, output
    assert re.search(r"Maximum range descriptors:\s*[1-9]", output, re.IGNORECASE), output


# -- odxtarget copy over SG_IO --------------------------------------------------------------------

def test_odxtarget_copy_within_one_lun(disks):
    lun = disks[0]
    before = image_bytes(lun)
    output = odxtarget_copy(f"{lun.generic}?lba=0&blocks=4096", f"{lun.generic}?lba=8192")
    after = image_bytes(lun)
    assert "method: odx" in output and f"{4096 * BLOCK_SIZE} bytes" in output, output
    assert digest(blocks(after, 8192, 4096)) == digest(blocks(before, 0, 4096))
    assert_unchanged_outside(before, after, [(8192, 4096)])


def test_odxtarget_copy_between_two_luns_sdx_to_sgn(disks):
    source, destination = disks[0], disks[1]
    source_before, destination_before = image_bytes(source), image_bytes(destination)
    output = odxtarget_copy(f"{source.block}?lba=16384&blocks=20480", f"{destination.generic}?lba=100")
    source_after, destination_after = image_bytes(source), image_bytes(destination)
    assert "method: odx" in output and f"{20480 * BLOCK_SIZE} bytes" in output, output
    assert digest(blocks(destination_after, 100, 20480)) == digest(blocks(source_before, 16384, 20480))
    assert source_after == source_before
    assert_unchanged_outside(destination_before, destination_after, [(100, 20480)])


def test_odxtarget_copy_zero_token(disks):
    lun = disks[1]
    before = image_bytes(lun)
    assert blocks(before, 1000, 3000) != bytes(3000 * BLOCK_SIZE)
    output = odxtarget_copy("--zero", f"{lun.generic}?lba=1000&blocks=3000")
    after = image_bytes(lun)
    assert "method: odx" in output, output
    assert blocks(after, 1000, 3000) == bytes(3000 * BLOCK_SIZE)
    assert_unchanged_outside(before, after, [(1000, 3000)])


# -- ddpt ---------------------------------------------------------------------------------------

def ddpt(*arguments: str) -> tuple[int, str]:
    """ddpt's ODX mode takes its ranges as scatter-gather lists (skip=LBA,NUM seek=LBA,NUM)."""
    completed = run("ddpt", *arguments, timeout=300, check=False)
    return completed.returncode, completed.stdout + completed.stderr


def test_ddpt_extended_copy_between_two_luns(disks):
    source, destination = disks[0], disks[1]
    source_before, destination_before = image_bytes(source), image_bytes(destination)
    status, output = ddpt(f"if={source.generic}", f"of={destination.generic}", f"bs={BLOCK_SIZE}",
                          "skip=2048", "seek=30000", "count=6000", "oflag=xcopy")
    assert status == 0, output
    destination_after = image_bytes(destination)
    assert digest(blocks(destination_after, 30000, 6000)) == digest(blocks(source_before, 2048, 6000))
    assert image_bytes(source) == source_before
    assert_unchanged_outside(destination_before, destination_after, [(30000, 6000)])


def test_ddpt_extended_copy_within_one_lun(disks):
    lun = disks[1]
    before = image_bytes(lun)
    status, output = ddpt(f"if={lun.generic}", f"of={lun.generic}", f"bs={BLOCK_SIZE}",
                          "skip=40000", "seek=50000", "count=4000", "oflag=xcopy")
    assert status == 0, output
    after = image_bytes(lun)
    assert digest(blocks(after, 50000, 4000)) == digest(blocks(before, 40000, 4000))
    assert_unchanged_outside(before, after, [(50000, 4000)])


def misplaced_range(lba: int, count: int) -> tuple[int, int]:
    """The (LBA, NUMBER OF LOGICAL BLOCKS) an SBC-4 5.12.3 reader finds in ddpt 0.97's block
    device range descriptor for ``lba``/``count``: ddpt writes the 8-byte LBA one byte late
    and the 4-byte count one byte late, so the LBA gains a low byte (the count's top byte)
    and the count loses its top byte and gains a zero low byte."""
    decoded_lba = (lba << ODX_LBA_SHIFT) | (count >> NUMBER_OF_BLOCKS_BITS)
    decoded_count = (count % (1 << NUMBER_OF_BLOCKS_BITS)) << ODX_LBA_SHIFT
    return decoded_lba, decoded_count


def test_ddpt_097_odx_copies_exactly_the_blocks_its_descriptors_name(disks):
    """ddpt asks for 8 blocks from LBA 2 to LBA 3; the bytes it sends name 2048 blocks from LBA
    512 to LBA 768, inside both LUNs. odxtarget copies those, and nothing else changes."""
    source, destination = disks[0], disks[1]
    source_before, destination_before = image_bytes(source), image_bytes(destination)
    status, output = ddpt(f"if={source.generic}", f"of={destination.generic}", f"bs={BLOCK_SIZE}",
                          "skip=2,8", "seek=3,8", "count=8", "oflag=odx")
    source_lba, count = misplaced_range(2, 8)
    destination_lba, _ = misplaced_range(3, 8)
    assert (source_lba, destination_lba, count) == (512, 768, 2048)
    destination_after = image_bytes(destination)
    print(output)
    assert status == 0, output
    assert digest(blocks(destination_after, destination_lba, count)) == digest(
        blocks(source_before, source_lba, count))
    assert blocks(destination_after, 3, 8) == blocks(destination_before, 3, 8), (
        "ddpt's intended destination blocks must not be written: its descriptors do not name them")
    assert image_bytes(source) == source_before
    assert_unchanged_outside(destination_before, destination_after, [(destination_lba, count)])


def test_ddpt_097_odx_beyond_the_lun_is_lba_out_of_range(disks):
    """ddpt asks for 8 blocks to LBA 300 of a 65536-block LUN; its bytes name LBA 76800, beyond
    the end: WRITE USING TOKEN fails with LBA OUT OF RANGE and no block changes."""
    source, destination = disks[0], disks[1]
    source_before, destination_before = image_bytes(source), image_bytes(destination)
    destination_lba, count = misplaced_range(300, 8)
    assert destination_lba + count > destination.size // BLOCK_SIZE
    status, output = ddpt(f"if={source.generic}", f"of={destination.generic}", f"bs={BLOCK_SIZE}",
                          "skip=0,8", "seek=300,8", "count=8", "iflag=odx")
    print(output)
    assert status != 0, output
    assert "out of range" in output.lower(), output
    assert image_bytes(destination) == destination_before
    assert image_bytes(source) == source_before


# -- two hosts on one LUN: the nexus LIO does not pass on ---------------------------------------

def test_two_hosts_reusing_a_list_id_behind_lio_cannot_swap_tokens(disks):
    """Behind LIO every initiator of a LUN shares one nexus in odxtarget, so list identifiers
    collide across hosts (docs/lio.md). Host B reusing the id of host A's unretrieved token
    must be refused, and A must still receive its own token and copy its own data."""
    from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
    from odxtarget.initiator.libiscsi import STATUS_CHECK_CONDITION, IscsiSession
    from tests.support.copy_cdbs import pt_cdb, read16, rrti_cdb, write16, wut_cdb

    lun, count = 1, 16
    base = disks[lun].size // BLOCK_SIZE - 3 * count
    data_a, data_b = os.urandom(count * BLOCK_SIZE), os.urandom(count * BLOCK_SIZE)
    host_a = IscsiSession(TARGET_IQN, initiator_name="iqn.2026-11.org.odxtarget:vm-host-a")
    host_b = IscsiSession(TARGET_IQN, initiator_name="iqn.2026-11.org.odxtarget:vm-host-b")
    with host_a.connect("127.0.0.1", LIO_PORT, lun), host_b.connect("127.0.0.1", LIO_PORT, lun):
        host_a.checked("write A", lun, write16(base, count), data_a)
        host_a.checked("write B", lun, write16(base + count, count), data_b)
        list_id = 0x0D0C0005
        populate_a = build_populate_token_list([(base, count)])
        host_a.checked("A: POPULATE TOKEN", lun, pt_cdb(list_id, len(populate_a)), populate_a)
        populate_b = build_populate_token_list([(base + count, count)])
        refused = host_b.scsi_command(lun, pt_cdb(list_id, len(populate_b)), populate_b)
        assert refused.status == STATUS_CHECK_CONDITION, refused.describe()
        assert (refused.sense_key, refused.asc, refused.ascq) == (0x5, 0x00, 0x16), refused.describe()
        info = host_a.checked("A: RRTI", lun, rrti_cdb(list_id), data_in_len=1024).data
        assert len(info) == 550, len(info)           # 38-byte header + the 512-byte token
        token = info[38:550]
        write = build_write_using_token_list(token, [(base + 2 * count, count)])
        host_a.checked("A: WRITE USING TOKEN", lun, wut_cdb(list_id + 1, len(write)), write)
        copied = host_a.checked("read back", lun, read16(base + 2 * count, count),
                                data_in_len=count * BLOCK_SIZE).data
        assert copied == data_a, "host A's WRITE USING TOKEN did not copy host A's ranges"
        # A has its token: the identifier is free for B now
        host_b.checked("B: POPULATE TOKEN again", lun, pt_cdb(list_id, len(populate_b)), populate_b)
        host_b.checked("B: RRTI", lun, rrti_cdb(list_id), data_in_len=1024)
