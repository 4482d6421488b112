"""EXTENDED COPY(LID1) and RECEIVE COPY RESULTS, mirroring libiscsi's ExtendedCopy.* and
ReceiveCopyResults.* checks, plus copies between LUs named by E4h descriptors."""

from __future__ import annotations

import struct

from odxtarget.copy.token import creator_descriptor
from odxtarget.copy.xcopy import build_extended_copy
from odxtarget.scsi.execution import complete_inline
from odxtarget.scsi.types import ScsiCommand, Status
from tests.unit.copy.odx_helpers import NEXUS, pattern, sense_triplet
from tests.support.copy_cdbs import lid1_cdb, xcopy_cdb

ILLEGAL, COPY_ABORTED = 0x5, 0xA


def xcopy(env, data: bytes, lun: int = 0):
    return env.run(xcopy_cdb(len(data)), data, lun)


def cscd(lu) -> bytes:
    return creator_descriptor(lu.naa_designator, lu.block_size)


def test_simple_copy_and_copy_status(env):
    lu = env.add_lu(0)
    data = pattern(2048 * 512, 1)
    env.write(0, 0, data)
    blocks = lu.block_count
    assert xcopy(env, build_extended_copy(1, [cscd(lu)], [(0, 0, 2048, 0, blocks - 2048)])).status == Status.GOOD
    assert env.read(0, blocks - 2048, 2048) == data
    status = bytes(env.ok(lid1_cdb(0x00, 1)).data_in)
    assert status == struct.pack(">IBHBI", 8, 0x01, 1, 0x00, 2048 * 512)
    assert sense_triplet(env.run(lid1_cdb(0x00, 1))) == (ILLEGAL, 0x24, 0x00)  # delivered once


def test_copy_between_luns_by_designator_and_this_lu_id(env):
    source = env.add_lu(0)
    destination = env.add_lu(1, block_size=4096)
    data = pattern(64 * 512, 2)
    env.write(0, 0, data)
    segments = [(0, 1, 64, 0, 10), (0xFFFF, 1, 8, 56, 20)]
    assert xcopy(env, build_extended_copy(2, [cscd(source), cscd(destination)], segments)).status == Status.GOOD
    assert env.read(1, 10, 8) == data
    assert env.read(1, 20, 1) == data[56 * 512:]


def test_no_copy_in_progress_is_invalid_field_in_cdb(env):
    env.add_lu(0)
    assert sense_triplet(env.run(lid1_cdb(0x00, 1))) == (ILLEGAL, 0x24, 0x00)


def test_parameter_list_length_rules(env):
    lu = env.add_lu(0)
    full = build_extended_copy(1, [cscd(lu)], [(0, 0, 2048, 0, 4096)])
    assert sense_triplet(xcopy(env, full[:16 + 31])) == (ILLEGAL, 0x1A, 0x00)
    assert sense_triplet(xcopy(env, full[:-1])) == (ILLEGAL, 0x1A, 0x00)
    assert env.run(xcopy_cdb(0)).status == Status.GOOD


def test_descriptor_limits(env):
    lu = env.add_lu(0)
    too_many_cscds = build_extended_copy(1, [cscd(lu)] * 65, [(0, 0, 8, 0, 4096)])
    assert sense_triplet(xcopy(env, too_many_cscds)) == (ILLEGAL, 0x26, 0x06)
    too_many_segments = build_extended_copy(1, [cscd(lu)], [(0, 0, 8, 0, 4096)] * 65)
    assert sense_triplet(xcopy(env, too_many_segments)) == (ILLEGAL, 0x26, 0x08)
    too_long = build_extended_copy(1, [cscd(lu)] * 65, [(0, 0, 8, 0, 4096)] * 219)
    assert sense_triplet(xcopy(env, too_long)) == (ILLEGAL, 0x1A, 0x00)


def test_unsupported_descriptor_types(env):
    lu = env.add_lu(0)
    fibre = bytearray(cscd(lu))
    fibre[0] = 0xE0
    assert sense_triplet(xcopy(env, build_extended_copy(1, [bytes(fibre)], [(0, 0, 8, 0, 4096)]))) == \
        (ILLEGAL, 0x26, 0x07)
    stream = bytearray(build_extended_copy(1, [cscd(lu)], [(0, 0, 8, 0, 4096)]))
    stream[48] = 0x03
    stream[48 + 3] = 0x10
    struct.pack_into(">I", stream, 8, 20)
    assert sense_triplet(xcopy(env, bytes(stream[:16 + 32 + 20]))) == (ILLEGAL, 0x26, 0x09)


def test_lu_id_type_and_nul_are_ignored(env):
    lu = env.add_lu(0)
    descriptor = bytearray(cscd(lu))
    descriptor[1] = (0x02 << 6) | 0x20
    assert xcopy(env, build_extended_copy(1, [bytes(descriptor)], [(0, 0, 8, 0, 4096)])).status == Status.GOOD


def test_segment_errors_are_copy_aborted(env):
    lu = env.add_lu(0)
    bad_index = xcopy(env, build_extended_copy(1, [cscd(lu)], [(0, 1, 8, 0, 4096)]))
    assert sense_triplet(bad_index)[0] == COPY_ABORTED and sense_triplet(bad_index)[1:] in ((0x08, 0x04), (0x0D, 0x02))
    beyond = xcopy(env, build_extended_copy(1, [cscd(lu)], [(0, 0, 2048, 0, lu.block_count - 1)]))
    assert sense_triplet(beyond) == (COPY_ABORTED, 0x00, 0x00)
    assert beyond.sense[18 + 12] == 0x21                     # the copy target's own sense follows
    unknown = bytearray(cscd(lu))
    unknown[8:24] = bytes(16)
    assert sense_triplet(xcopy(env, build_extended_copy(1, [bytes(unknown)], [(0, 0, 8, 0, 4096)]))) == \
        (COPY_ABORTED, 0x0D, 0x02)
    assert sense_triplet(env.run(lid1_cdb(0x00, 1))) == (ILLEGAL, 0x24, 0x00)  # nothing was recorded


def test_extended_copy_cancels_live_tokens_on_destination(ext4_env):
    env = ext4_env
    lu = env.add_lu(0)
    token = env.token(0, [(4096, 8)])
    assert xcopy(env, build_extended_copy(1, [cscd(lu)], [(0, 0, 8, 0, 4096)])).status == Status.GOOD
    assert sense_triplet(env.write_using(0, token, [(100, 8)])) == (ILLEGAL, 0x23, 0x08)


def test_a_write_protected_nexus_cannot_make_an_extended_copy_write(env):
    """A demo-mode session of a demo_mode_write_protect target (ScsiCommand.write_protected)
    is refused as a read-only destination is, and nothing is written."""
    source = env.add_lu(0)
    destination = env.add_lu(1)
    env.write(0, 0, pattern(8 * 512, 3))
    data = build_extended_copy(3, [cscd(source), cscd(destination)], [(0, 1, 8, 0, 0)])
    result = complete_inline(env.target.execute(ScsiCommand(xcopy_cdb(len(data)), NEXUS, 0, data, len(data),
                                                            write_protected=True)))
    assert sense_triplet(result) == (0x07, 0x27, 0x00)
    assert env.read(1, 0, 8) == bytes(8 * 512)
