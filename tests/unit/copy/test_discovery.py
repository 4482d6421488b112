"""Discovery: VPD 00h / 8Fh byte for byte, INQUIRY 3PC, control page QERR, RCOP."""

from __future__ import annotations

import struct

from odxtarget.copy.limits import CopyLimits, MiB
from tests.support.copy_cdbs import lid1_cdb


def inquiry(env, page: int | None, allocation: int = 1024, lun: int = 0) -> bytes:
    cdb = bytes((0x12, 1 if page is not None else 0, page or 0)) + struct.pack(">H", allocation) + b"\x00"
    return bytes(env.ok(cdb, lun=lun).data_in)


def descriptors(page: bytes) -> list[tuple[int, bytes]]:
    out = []
    offset = 4
    while offset < len(page):
        code, length = struct.unpack_from(">HH", page, offset)
        out.append((code, page[offset:offset + 4 + length]))
        offset += 4 + length
    return out


def test_supported_vpd_pages_list_8f_ascending(ext4_env):
    ext4_env.add_lu(0)
    page = inquiry(ext4_env, 0x00)
    codes = list(page[4:4 + struct.unpack_from(">H", page, 2)[0]])
    assert codes[0] == 0 and 0x8F in codes and codes == sorted(set(codes))


def test_standard_inquiry_sets_3pc(ext4_env):
    ext4_env.add_lu(0)
    assert inquiry(ext4_env, None)[5] & 0x08


def test_control_mode_page_reports_qerr_zero(ext4_env):
    ext4_env.add_lu(0)
    data = bytes(ext4_env.ok(bytes((0x1A, 0x08, 0x0A, 0, 255, 0))).data_in)
    page = data[4:]
    assert page[0] & 0x3F == 0x0A and (page[3] >> 1) & 0x03 == 0


def test_third_party_copy_vpd_layout_512(ext4_env):
    ext4_env.add_lu(0, block_size=512)
    page = inquiry(ext4_env, 0x8F)
    assert page[0] == 0 and page[1] == 0x8F
    assert struct.unpack_from(">H", page, 2)[0] == len(page) - 4
    found = descriptors(page)
    codes = [code for code, _ in found]
    assert codes == [0x0000, 0x0001, 0x0004, 0x0008, 0x000C, 0x0106, 0x0108, 0x8001]
    assert all(len(body) % 4 == 0 for _, body in found)
    bdrl = found[0][1]
    assert bdrl == (b"\x00\x00\x00\x20" + bytes(6) + struct.pack(">HIIQQ", 64, 600, 60, 256 * MiB // 512,
                                                                     64 * MiB // 512))
    commands = found[1][1]
    assert commands == bytes.fromhex("0001" "0010" "0e" "8304001011 1c" "840600030405 0708".replace(" ", "")) + b"\x00"
    assert found[2][1] == bytes.fromhex("0004001c00000000") + struct.pack(">HHII", 64, 64, 8192, 0) + bytes(12)
    assert found[3][1] == bytes.fromhex("000800040202e400")
    assert found[4][1] == bytes.fromhex("000c00040002ffff")
    features = found[5][1]
    assert struct.unpack_from(">HH", features, 0) == (0x0106, 0x5C)
    assert struct.unpack_from(">III", features, 16) == (1, 600, 600)
    assert struct.unpack_from(">H", features, 46)[0] == 48
    assert struct.unpack_from(">H2xHQQ", features, 50) == (44, 8, 256 * MiB, 64 * MiB)
    rod_types = found[6][1]
    assert struct.unpack_from(">HHxxH", rod_types, 0) == (0x0108, 4 + 3 * 64, 3 * 64)
    entries = [struct.unpack_from(">IB", rod_types, 8 + 64 * index) for index in range(3)]
    assert entries == [(0x00800000, 0x03), (0x00800001, 0x03), (0xFFFF0001, 0x02)]
    general = found[7][1]
    assert general == struct.pack(">HHIII", 0x8001, 0x20, 64, 64, 64 * MiB) + b"\x09" + bytes(19)


def test_third_party_copy_vpd_4096_counts_blocks_and_cuts_to_allocation(ext4_env):
    ext4_env.add_lu(0, block_size=4096)
    page = inquiry(ext4_env, 0x8F, allocation=255)
    assert len(page) == 255
    assert struct.unpack_from(">QQ", page, 4 + 20) == (256 * MiB // 4096, 64 * MiB // 4096)


def test_limits_are_configurable(tmp_path):
    from tests.unit.copy.odx_helpers import Env

    env = Env(str(tmp_path), limits=CopyLimits(max_range_descriptors=8, default_inactivity_timeout=30,
                                               max_token_transfer_bytes=32 * MiB, optimal_transfer_bytes=8 * MiB))
    try:
        env.add_lu(0)
        page = inquiry(env, 0x8F)
        assert struct.unpack_from(">HIIQQ", page, 14) == (8, 600, 30, 32 * MiB // 512, 8 * MiB // 512)
    finally:
        env.close()


def test_receive_copy_operating_parameters(ext4_env):
    ext4_env.add_lu(0)
    data = bytes(ext4_env.ok(lid1_cdb(0x03)).data_in)
    assert struct.unpack_from(">I", data, 0)[0] == len(data) - 4 >= 40
    assert data[4] & 1  # SNLID
    assert struct.unpack_from(">HHII", data, 8) == (64, 64, 8192, 64 * MiB)
    assert data[43] == 2 and data[44:46] == b"\x02\xe4"


def test_report_supported_operation_codes_lists_copy_commands(ext4_env):
    ext4_env.add_lu(0)
    for action in (0x00, 0x10, 0x11, 0x1C):
        cdb = struct.pack(">BBBBHIBB", 0xA3, 0x0C, 0x02, 0x83, action, 512, 0, 0)
        data = bytes(ext4_env.ok(cdb).data_in)
        assert data[1] & 0x07 == 0x03, (action, data.hex())  # SUPPORT: supported as in the standard
