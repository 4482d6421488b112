"""MODE SENSE / MODE SELECT: pages, PC values, block descriptors, SWP, D_SENSE, UAs to others."""

import struct

from tests.unit.scsi.helpers import (NEXUS_A, NEXUS_B, mode_select6, mode_select10, mode_sense6,
                                     mode_sense10, read16, ready, write10)


def _pages(data: bytes, header: int, descriptor_length: int) -> dict[int, bytes]:
    pages, position = {}, header + descriptor_length
    while position < len(data):
        length = data[position + 1] + 2
        pages[data[position] & 0x3F] = data[position:position + length]
        position += length
    return pages


def test_mode_sense6_all_pages_with_block_descriptor():
    h = ready(blocks=1000)
    data = bytes(h.good(mode_sense6()).data_in)
    assert data[0] == len(data) - 1 and data[3] == 8
    assert data[2] == 0x10                                   # DPOFUA, not WP
    assert struct.unpack(">I", data[4:8])[0] == 1000 and struct.unpack(">I", data[8:12])[0] == 512
    pages = _pages(data, 4, 8)
    assert sorted(pages) == [0x08, 0x0A, 0x1C]
    assert pages[0x08][2] & 0x04                             # WCE from config
    control = pages[0x0A]
    assert control[2] & 0xE0 == 0 and (control[3] >> 1) & 3 == 0 and control[4] & 0x08 == 0
    assert struct.unpack(">H", control[8:10])[0] != 0


def test_mode_sense_cut_to_allocation_length_keeps_full_length_field():
    h = ready()
    result = h.good(mode_sense6(alloc=4))
    assert len(result.data_in) == 4 == result.transfer_length and result.data_in[0] > 3


def test_mode_sense10_long_lba_and_dbd():
    h = ready(blocks=1000, block_size=4096)
    data = bytes(h.good(mode_sense10(llbaa=1)).data_in)
    assert struct.unpack(">H", data[:2])[0] == len(data) - 2 and data[4] & 1 and struct.unpack(">H", data[6:8])[0] == 16
    assert struct.unpack(">Q4xI", data[8:24]) == (1000, 4096)
    no_descriptor = bytes(h.good(mode_sense10(page=0x0A, dbd=1)).data_in)
    assert struct.unpack(">H", no_descriptor[6:8])[0] == 0 and no_descriptor[8] == 0x0A


def test_page_control_values():
    h = ready()
    changeable = _pages(bytes(h.good(mode_sense6(page=0x3F, pc=1, dbd=1)).data_in), 4, 0)
    assert changeable[0x08][2] == 0x04 and changeable[0x0A][2] == 0x04 and changeable[0x0A][4] == 0x08
    assert changeable[0x1C][2:] == bytes(10)
    default = bytes(h.good(mode_sense6(page=0x0A, pc=2, dbd=1)).data_in)
    assert default[4] == 0x0A
    sense = h.check(mode_sense6(pc=3))
    assert (sense.asc, sense.field_pointer) == (0x39, (True, 2, 7))
    assert h.check(mode_sense6(page=0x19)).asc == 0x24
    assert h.check(mode_sense6(page=0x0A, subpage=1)).asc == 0x24
    h.good(mode_sense6(page=0x3F, subpage=0xFF))


def _select6(h, page: bytes, nexus=NEXUS_A):
    params = bytes(4) + page
    return h.run(mode_select6(len(params)), params, nexus=nexus)


def _current(h, code: int) -> bytearray:
    return bytearray(bytes(h.good(mode_sense6(page=code, dbd=1)).data_in)[4:])


def test_swp_makes_writes_fail_and_reads_work():
    # libiscsi ModeSense6.Control-SWP / set_swp()
    h = ready()
    control = _current(h, 0x0A)
    control[4] |= 0x08
    assert _select6(h, bytes(control)).status == 0
    assert _current(h, 0x0A)[4] & 0x08
    assert h.good(mode_sense6()).data_in[2] & 0x80               # WP reflects SWP
    h.good(read16(0, 1))
    sense = h.check(write10(0, 1), bytes(512))
    assert (sense.key, sense.asc, sense.ascq) == (7, 0x27, 0x02)
    control[4] &= ~0x08
    assert _select6(h, bytes(control)).status == 0
    h.good(write10(0, 1), bytes(512))


def test_d_sense_switches_sense_format():
    h = ready()
    control = _current(h, 0x0A)
    control[2] |= 0x04
    assert _select6(h, bytes(control)).status == 0
    sense = h.check(read16(0xFFFFFFFFFFFFFFFF, 1))
    assert sense.descriptor and (sense.key, sense.asc) == (5, 0x21)
    control[2] &= ~0x04
    _select6(h, bytes(control))
    assert not h.check(read16(0xFFFFFFFFFFFFFFFF, 1)).descriptor


def test_wce_changeable_via_mode_select10():
    h = ready()
    caching = _current(h, 0x08)
    caching[2] &= ~0x04
    params = bytes(8) + bytes(caching)
    h.good(mode_select10(len(params)), params)
    assert not _current(h, 0x08)[2] & 0x04
    h.good(write10(0, 1), bytes(512))
    assert h.backend.fua_writes == 1                          # write-through now


def test_mode_select_rejects_non_changeable_bits_and_bad_lists():
    h = ready()
    control = _current(h, 0x0A)
    control[3] |= 0x02                                        # QERR
    result = _select6(h, bytes(control))
    from tests.unit.scsi.helpers import parse_sense
    sense = parse_sense(result.sense)
    assert (sense.asc, sense.field_pointer) == (0x26, (False, 4 + 3, 1))
    good = _current(h, 0x0A)
    bad_length = bytearray(good)
    bad_length[1] = 9
    assert parse_sense(_select6(h, bytes(bad_length)).sense).asc == 0x26
    ps = bytearray(good)
    ps[0] |= 0x80
    assert parse_sense(_select6(h, bytes(ps)).sense).field_pointer == (False, 4, 7)
    truncated = bytes(4) + bytes(good)[:6]
    assert h.check(mode_select6(len(truncated)), truncated).asc == 0x1A
    assert h.check(mode_select6(12, pf=0), bytes(12)).field_pointer == (True, 1, 4)
    assert h.check(mode_select6(12, sp=1), bytes(12)).asc == 0x39
    h.good(mode_select6(0))
    descriptor = bytes((0, 0, 0, 8)) + struct.pack(">II", 0, 4096) + bytes(good)
    assert h.check(mode_select6(len(descriptor)), descriptor).asc == 0x26
    same = bytes((0, 0, 0, 8)) + struct.pack(">II", 0, 512) + bytes(good)
    h.good(mode_select6(len(same)), same)


def test_mode_select_change_gives_other_nexuses_unit_attention():
    h = ready()
    h.login(NEXUS_B)
    control = _current(h, 0x0A)
    control[2] |= 0x04
    assert _select6(h, bytes(control)).status == 0
    h.good(bytes(6))                                          # the changer sees nothing
    sense = h.check(bytes(6), nexus=NEXUS_B)
    assert (sense.key, sense.asc, sense.ascq) == (6, 0x2A, 0x01)
    assert h.run(bytes(6), nexus=NEXUS_B).status == 0
    assert _select6(h, bytes(control)).status == 0            # no change -> no UA
    assert h.run(bytes(6), nexus=NEXUS_B).status == 0


def test_read_only_lu_reports_wp():
    h = ready(read_only=True)
    assert h.good(mode_sense6()).data_in[2] & 0x80


def _caching_select10(h, wce: bool):
    caching = _current(h, 0x08)
    caching[2] = (caching[2] | 0x04) if wce else (caching[2] & ~0x04)
    params = bytes(8) + bytes(caching)
    return h.run(mode_select10(len(params)), params)


def test_write_cache_off_in_the_config_is_not_changeable():
    """docs/configuration.md write_cache: an initiator cannot enable a cache the config disabled."""
    from tests.unit.scsi.helpers import parse_sense
    h = ready(write_cache=False)
    changeable = _pages(bytes(h.good(mode_sense6(page=0x08, pc=1, dbd=1)).data_in), 4, 0)
    assert changeable[0x08][2] & 0x04 == 0                    # WCE: not changeable
    assert _pages(bytes(h.good(mode_sense6(page=0x3F, pc=1, dbd=1)).data_in), 4, 0)[0x0A][2] == 0x04
    result = _caching_select10(h, wce=True)
    sense = parse_sense(result.sense)
    assert (sense.key, sense.asc, sense.ascq) == (5, 0x26, 0)
    assert sense.field_pointer == (False, 8 + 2, 2)           # caching page byte 2, bit 2 (WCE)
    assert not _current(h, 0x08)[2] & 0x04
    h.good(write10(0, 1), bytes(512))
    assert h.backend.fua_writes == 1                          # still write-through
    assert _caching_select10(h, wce=False).status == 0        # restating the value is fine


def test_write_cache_on_in_the_config_stays_changeable_both_ways():
    h = ready(write_cache=True)
    changeable = _pages(bytes(h.good(mode_sense6(page=0x08, pc=1, dbd=1)).data_in), 4, 0)
    assert changeable[0x08][2] & 0x04
    assert _caching_select10(h, wce=False).status == 0
    assert not _current(h, 0x08)[2] & 0x04
    assert _caching_select10(h, wce=True).status == 0
    assert _current(h, 0x08)[2] & 0x04
