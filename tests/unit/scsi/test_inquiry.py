"""INQUIRY standard data and VPD pages, as libiscsi's Inquiry.* and setup code read them."""

import struct

import pytest

from odxtarget.scsi.constants import VpdPage
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig, derive_naa
from odxtarget.storage.memory import MemoryBackend
from tests.unit.scsi.helpers import CHECK, GOOD, NEXUS_A, TARGET_NAME, Harness, inquiry, ready


def _designators(page: bytes):
    position, out = 4, []
    while position < 4 + struct.unpack(">H", page[2:4])[0]:
        head = page[position:position + 4]
        out.append((head[0], head[1], page[position + 4:position + 4 + head[3]]))
        position += 4 + head[3]
    return out


def test_standard_inquiry_fields():
    h = ready()
    data = bytes(h.good(inquiry(alloc=260)).data_in)
    assert len(data) == 96 and data[4] == 91          # additional length = size - 5
    assert data[0] == 0x00                            # qualifier 0, direct access
    assert data[2] == 0x06                            # SPC-4
    assert data[3] & 0x0F == 2 and not data[3] & 0xC0  # RDF 2, no AERC/TRMTSK
    assert data[5] & 0x08 == 0                        # 3PC off until the copy manager registers
    assert data[7] & 0x02                             # CMDQUE
    assert data[8:16] == b"ODXTGT  " and data[16:32] == b"odxtarget".ljust(16)
    assert all(b == 0 or 0x20 <= b <= 0x7E for b in data[8:36])
    versions = struct.unpack(">8H", data[58:74])
    assert {0x00A0, 0x0460, 0x04C0, 0x0600, 0x0960} <= set(versions)   # SAM-5 SPC-4 SBC-3 SBC-4 iSCSI


def test_third_party_copy_bit_follows_lu_flag():
    h = ready()
    h.lu.third_party_copy = True
    assert h.good(inquiry()).data_in[5] & 0x08


@pytest.mark.parametrize("alloc", [0, 5, 36, 95, 511, 512])
def test_allocation_length_cuts(alloc):
    h = ready()
    result = h.good(inquiry(alloc=alloc))
    assert len(result.data_in) == min(alloc, 96) == result.transfer_length


def test_page_code_without_evpd_is_invalid_field_pointing_at_byte_2():
    h = ready()
    sense = h.check(inquiry(evpd=0, page=1, alloc=256))
    assert (sense.key, sense.asc, sense.ascq) == (5, 0x24, 0)
    assert sense.field_pointer == (True, 2, None)


def test_unsupported_vpd_page():
    h = ready()
    sense = h.check(inquiry(evpd=1, page=0x8F))
    assert (sense.key, sense.asc) == (5, 0x24) and sense.field_pointer[1] == 2


def test_supported_pages_sorted_and_each_readable():
    h = ready()
    page = bytes(h.good(inquiry(1, 0)).data_in)
    codes = list(page[4:4 + page[3]])
    assert codes == sorted(codes) == [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
    for code in codes:
        data = bytes(h.good(inquiry(1, code)).data_in)
        assert data[1] == code and len(data) == 4 + struct.unpack(">H", data[2:4])[0]


def test_vpd_registry_allows_more_pages():
    h = ready()
    h.lu.vpd_pages.register(VpdPage.THIRD_PARTY_COPY, lambda lu, nexus: b"\x00\x01\x02\x03")
    assert bytes(h.good(inquiry(1, 0x8F)).data_in) == b"\x00\x8f\x00\x04\x00\x01\x02\x03"
    assert 0x8F in bytes(h.good(inquiry(1, 0)).data_in)[4:]
    with pytest.raises(ValueError):
        h.lu.vpd_pages.register(VpdPage.THIRD_PARTY_COPY, lambda lu, nexus: b"")


def test_serial_number_page_is_stable():
    one, two = ready(), ready()
    s1 = bytes(one.good(inquiry(1, 0x80)).data_in)
    assert s1 == bytes(two.good(inquiry(1, 0x80)).data_in) and len(s1) > 4
    explicit = ready(serial="SER123")
    assert bytes(explicit.good(inquiry(1, 0x80)).data_in)[4:] == b"SER123"


def test_device_identification_designators():
    h = ready()
    designators = _designators(bytes(h.good(inquiry(1, 0x83)).data_in))
    code_set, kind, naa = designators[0]
    assert (code_set & 0x0F, kind) == (1, 0x03) and len(naa) == 16 and naa[0] >> 4 == 6
    assert naa == h.lu.naa_designator == derive_naa(h.lu.serial)
    by_kind = {kind: value for _, kind, value in designators}
    port_name = by_kind[0x98]                           # PIV, target port, SCSI name string
    assert port_name.rstrip(b"\0") == f"{TARGET_NAME},t,0x1".encode() and len(port_name) % 4 == 0
    assert by_kind[0x94] == b"\x00\x00\x00\x01"         # relative target port 1
    assert by_kind[0x95] == b"\x00\x00\x00\x01"         # target port group 1
    assert by_kind[0xA8].rstrip(b"\0") == TARGET_NAME.encode()
    protocol_ids = {code_set >> 4 for code_set, kind, _ in designators if kind & 0x80}
    assert protocol_ids == {5}                          # iSCSI


def test_naa_from_config_wwn_and_bad_wwn():
    wwn = "6" + "0123456789abcdef0123456789abcde"
    h = ready(wwn=wwn)
    assert _designators(bytes(h.good(inquiry(1, 0x83)).data_in))[0][2] == bytes.fromhex(wwn)
    with pytest.raises(ValueError):
        LogicalUnit(LogicalUnitConfig("x", MemoryBackend(4096), wwn="1234"))


@pytest.mark.parametrize("block_size", [512, 4096])
def test_block_limits(block_size):
    h = ready(block_size=block_size)
    page = bytes(h.good(inquiry(1, 0xB0)).data_in)
    assert page[3] == 0x3C and len(page) == 64       # SBC-3 length, as libiscsi requires
    assert page[4] & 1 == 0                            # WSNZ=0: 0 blocks means "to the end"
    assert page[5] == h.lu.max_compare_and_write_blocks == 255
    max_transfer, = struct.unpack(">I", page[8:12])
    assert max_transfer * block_size == 16 * 1024 * 1024
    max_unmap, max_descriptors = struct.unpack(">II", page[20:28])
    assert 1 <= max_unmap <= 1024 * 1024 and 1 < max_descriptors <= 1024 * 1024
    max_ws, = struct.unpack(">Q", page[36:44])
    assert 256 <= max_ws < 65536                      # WriteSame16.Unmap: 64Ki blocks must be refused
    assert page[44:64] == bytes(20)                   # no atomic writes


def test_characteristics_and_provisioning_pages():
    h = ready()
    b1 = bytes(h.good(inquiry(1, 0xB1)).data_in)
    assert b1[3] == 0x3C and struct.unpack(">H", b1[4:6])[0] == 1   # non-rotating
    b2 = bytes(h.good(inquiry(1, 0xB2)).data_in)
    assert b2[5] & 0xE0 == 0xE0 and b2[5] & 0x1C == 0x04 and not b2[5] & 0x02   # LBPU LBPWS LBPWS10, LBPRZ 1, no ANC_SUP
    assert b2[6] & 0x07 == 2                                                     # thin


def test_inquiry_ignores_pending_unit_attention():
    h = Harness()
    assert h.run(inquiry(), nexus=NEXUS_A).status == GOOD
    assert h.run(bytes(6)).status == CHECK                  # the power-on UA is still there
    assert h.run(bytes(6)).status == GOOD
