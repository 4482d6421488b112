"""Hypothesis properties: random CDBs never make the core raise, and READ/WRITE match a model."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odxtarget.scsi.execution import complete_inline
from odxtarget.scsi.errors import ScsiError
from odxtarget.scsi.types import ScsiCommand, Status
from tests.unit.scsi.helpers import NEXUS_A, ready, read10, read16, write10, write16

HARNESS = ready(blocks=64)
HARNESS_4K = ready(blocks=16, block_size=4096)
SPECS = list(HARNESS.lu.commands)
VALID_STATUSES = {Status.GOOD, Status.CHECK_CONDITION, Status.RESERVATION_CONFLICT}


@st.composite
def cdbs(draw):
    spec = draw(st.sampled_from(SPECS))
    body = draw(st.binary(min_size=spec.cdb_length - 1, max_size=spec.cdb_length + 6))
    cdb = bytearray((spec.opcode,)) + bytearray(body)
    if spec.service_action is not None:
        cdb[1] = (cdb[1] & 0xE0) | spec.service_action
    if draw(st.booleans()):  # mostly-valid CDBs reach deeper into the handlers
        for index in range(1, spec.cdb_length):
            cdb[index] &= spec.usage[index] if not (spec.service_action is not None and index == 1) else 0xFF
    return bytes(cdb)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cdb=cdbs(), data=st.binary(max_size=3000), expected=st.integers(0, 1 << 20),
       four_k=st.booleans())
def test_random_cdbs_never_raise(cdb, data, expected, four_k):
    harness = HARNESS_4K if four_k else HARNESS
    if cdb[0] in (0x16, 0x56):
        cdb = bytes(6) if cdb[0] == 0x16 else cdb          # keep the LU unreserved for later examples
    result = complete_inline(harness.target.execute(ScsiCommand(cdb, NEXUS_A, 0, data, expected)))
    assert result.status in VALID_STATUSES
    assert (result.status == Status.CHECK_CONDITION) == bool(result.sense)
    assert result.transfer_length >= 0
    if result.status == Status.GOOD and result.data_in:
        assert result.transfer_length == len(result.data_in)
    harness.lu.reservation_holder = None


@settings(max_examples=300, deadline=None)
@given(cdb=cdbs())
def test_handlers_raise_only_scsi_errors(cdb):
    """Below the dispatcher: handlers given a CDB that passed validation raise nothing but
    ScsiError (or the NoDataOut control signal)."""
    from odxtarget.scsi.dataout import NoDataOut
    lu = HARNESS.lu
    try:
        spec = lu.commands.lookup(cdb)
        spec.check_reserved_bits(cdb)
        spec.handler(lu, ScsiCommand(cdb, NEXUS_A, 0, bytes(512)), HARNESS.target)
    except (ScsiError, NoDataOut):
        pass
    lu.reservation_holder = None


BLOCKS = 64


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, BLOCKS + 2), st.integers(0, 8), st.integers(0, 255),
                              st.booleans()), min_size=1, max_size=25))
def test_read_write_match_a_model(ops):
    harness = ready(blocks=BLOCKS)
    model = bytearray(BLOCKS * 512)
    for is_write, lba, blocks, seed, sixteen in ops:
        in_range = lba + blocks <= BLOCKS
        if is_write:
            data = bytes(random.Random(seed).randbytes(blocks * 512))
            result = harness.run((write16 if sixteen else write10)(lba, blocks), data)
            if in_range:
                assert result.status == Status.GOOD
                model[lba * 512:(lba + blocks) * 512] = data
            else:
                assert result.status == Status.CHECK_CONDITION and result.sense[12] == 0x21
        else:
            result = harness.run((read16 if sixteen else read10)(lba, blocks))
            if in_range:
                assert bytes(result.data_in) == bytes(model[lba * 512:(lba + blocks) * 512])
            else:
                assert result.status == Status.CHECK_CONDITION and result.sense[12] == 0x21
    assert harness.read(0, BLOCKS) == bytes(model)
