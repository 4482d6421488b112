"""Implicit ALUA (SPC-4 5.16): TPGS in INQUIRY and REPORT TARGET PORT GROUPS (SPC-4 6.37)."""

from __future__ import annotations

import struct

import pytest

from odxtarget.scsi.handlers.alua import port_groups_of
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import ItNexus
from odxtarget.transport.iscsi.session import make_nexus
from tests.unit.scsi.helpers import NEXUS_A, TARGET_NAME, inquiry, ready


def rtpg(data_format: int = 0, allocation: int = 1024) -> bytes:
    return bytes((0xA3, (data_format << 5) | 0x0A, 0, 0, 0, 0)) + struct.pack(">I", allocation) + bytes(2)


def groups_of(data: bytes, header: int) -> list[tuple[int, int, int, list[int]]]:
    """(state byte, supported states, group, relative ports) per descriptor."""
    out, position = [], header
    end = 4 + struct.unpack(">I", data[:4])[0]
    while position < end:
        state, supported, group, _, status, _, count = struct.unpack_from(">BBHBBBB", data, position)
        ports = [struct.unpack_from(">H", data, position + 8 + 4 * index + 2)[0] for index in range(count)]
        out.append((state, supported, group, ports))
        assert status == 0
        position += 8 + 4 * count
    assert position == end
    return out


def test_inquiry_reports_implicit_alua_only():
    h = ready()
    assert h.good(inquiry()).data_in[5] & 0x30 == 0x10          # TPGS 01b


def test_one_gateway_is_one_active_optimized_group_with_one_port():
    h = ready()
    data = bytes(h.good(rtpg()).data_in)
    assert groups_of(data, 4) == [(0x00, 0x01, 1, [1])]


def test_every_gateway_of_the_target_is_a_group_and_the_extended_header_says_so():
    h = ready()
    h.target.port_groups = (1, 2, 7)
    data = bytes(h.good(rtpg(data_format=1)).data_in)
    assert data[4] == 0x10 and data[5] == 0                    # FORMAT TYPE 001b, no transition time
    assert groups_of(data, 8) == [(0, 1, 1, [1]), (0, 1, 2, [2]), (0, 1, 7, [7])]


@pytest.mark.parametrize("allocation", [0, 3, 4, 11, 12, 100])
def test_the_allocation_length_cuts_the_data(allocation):
    h = ready()
    result = h.good(rtpg(allocation=allocation))
    assert len(result.data_in) == min(allocation, 16) == result.transfer_length


def test_an_unknown_parameter_data_format_is_an_invalid_field():
    h = ready()
    sense = h.check(rtpg(data_format=2))
    assert (sense.key, sense.asc, sense.ascq) == (5, 0x24, 0)


def test_without_a_target_the_nexus_reports_its_own_group():
    """Behind LIO the LU runs without a ScsiTarget: the nexus's group is all there is."""
    nexus = ItNexus(NEXUS_A.initiator_port, NEXUS_A.target_port, relative_target_port_id=3, target_port_group=3)
    assert port_groups_of(None, nexus) == (3,)
    assert port_groups_of(ScsiTarget(TARGET_NAME, {}, (1, 3)), nexus) == (1, 3)


def test_an_iscsi_nexus_takes_its_port_and_group_from_the_portal_group_tag():
    nexus = make_nexus("iqn.1994-05.com.example:a", bytes(6), TARGET_NAME, 2)
    assert (nexus.relative_target_port_id, nexus.target_port_group) == (2, 2)
    zero = make_nexus("iqn.1994-05.com.example:a", bytes(6), TARGET_NAME, 0)
    assert (zero.relative_target_port_id, zero.target_port_group) == (1, 1)     # port 0 is reserved
