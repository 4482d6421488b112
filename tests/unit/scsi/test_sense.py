"""Sense data: what the core packs, an initiator reads back (SenseData.parse), in both formats;
and the copy target's sense that EXTENDED COPY appends to fixed format sense."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from odxtarget.copy.errors import CopyAborted
from odxtarget.scsi.sense import MAX_SENSE_BYTES, FieldPointer, SenseData, SenseKey

senses = st.builds(
    SenseData,
    key=st.integers(0, 15), asc=st.integers(0, 255), ascq=st.integers(0, 255),
    information=st.one_of(st.none(), st.integers(0, 0xFFFF_FFFF)),
    command_specific=st.one_of(st.none(), st.integers(0, 0xFFFF_FFFF)),
    field_pointer=st.one_of(st.none(), st.builds(FieldPointer, st.booleans(), st.integers(0, 0xFFFF),
                                                 st.one_of(st.none(), st.integers(0, 7)))),
)


@given(sense=senses, descriptor_format=st.booleans())
def test_packed_sense_parses_back_to_key_asc_ascq_and_information(sense, descriptor_format):
    parsed = SenseData.parse(sense.pack(descriptor_format))
    assert parsed is not None
    assert (parsed.key, parsed.asc, parsed.ascq, parsed.information) == (
        sense.key, sense.asc, sense.ascq, sense.information)


@given(raw=st.binary(max_size=300))
def test_any_bytes_parse_to_sense_or_none_without_raising(raw):
    parsed = SenseData.parse(raw)
    if parsed is not None:
        assert raw[0] & 0x7F in (0x70, 0x71, 0x72, 0x73)
        assert 0 <= parsed.key <= 15


def test_short_and_foreign_buffers():
    assert SenseData.parse(b"") is None
    assert SenseData.parse(bytes([0x00, 0, 5])) is None               # not a sense response code
    truncated = SenseData.parse(bytes([0xF0, 0, 0x05, 0, 0, 0, 9]))    # VALID, cut before ASC
    assert truncated is not None and (truncated.key, truncated.asc, truncated.information) == (5, 0, 9)
    no_information = SenseData.parse(bytes([0x70, 0, 0x05, 0, 0, 0, 9]) + bytes(11))   # VALID=0
    assert no_information is not None and no_information.information is None


def test_copy_aborted_appends_the_copy_targets_sense_to_fixed_format_only():
    target_sense = SenseData(SenseKey.MEDIUM_ERROR, 0x11, 0x00).fixed()
    error = CopyAborted(0x0D, 0x01, "segment 3 failed", segment=3, target_sense=target_sense)
    fixed = error.sense.pack(False)
    assert fixed[18:] == target_sense and fixed[7] == len(fixed) - 8
    assert int.from_bytes(fixed[8:12], "big") == 3                   # COMMAND-SPECIFIC: the segment
    assert (SenseData.parse(fixed).key, fixed[12], fixed[13]) == (SenseKey.COPY_ABORTED, 0x0D, 0x01)
    descriptor = error.sense.pack(True)
    assert descriptor[0] == 0x72 and target_sense not in descriptor
    huge = CopyAborted(0x0D, 0x01, "x", target_sense=bytes(400)).sense.pack(False)
    assert len(huge) == MAX_SENSE_BYTES and huge[7] == MAX_SENSE_BYTES - 8
