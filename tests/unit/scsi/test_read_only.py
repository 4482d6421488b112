"""A read-only LU: every medium-changing command gets DATA PROTECT / WRITE PROTECTED (libiscsi
ReadOnly.ReadOnlySBC), even with no data-out; reads and cache flushes still work."""

import pytest

from tests.unit.scsi.helpers import (compare_and_write, orwrite16, ready, sync_cache10, unmap_cdb,
                                     unmap_params, write10, write12, write16, write_same10, write_same16,
                                     write_verify10, write_verify12, write_verify16)

PARAMS = unmap_params([(0, 1)])
WRITERS = [
    (compare_and_write(0, 1), bytes(1024)), (orwrite16(0, 1), bytes(512)), (unmap_cdb(len(PARAMS)), PARAMS),
    (write10(0, 1), bytes(512)), (write12(0, 1), bytes(512)), (write16(0, 1), bytes(512)),
    (write_same10(0, 1), bytes(512)), (write_same10(0, 1, unmap=True), b""),
    (write_same16(0, 1), bytes(512)), (write_same16(0, 1, unmap=True), b""),
    (write_verify10(0, 1), bytes(512)), (write_verify12(0, 1), bytes(512)), (write_verify16(0, 1), bytes(512)),
]


@pytest.mark.parametrize("cdb,data", WRITERS)
def test_writes_are_write_protected(cdb, data):
    h = ready(read_only=True)
    sense = h.check(cdb, data)
    assert (sense.key, sense.asc, sense.ascq) == (7, 0x27, 0x00)


def test_reads_work_on_read_only_lu():
    h = ready(read_only=True)
    assert h.read(0, 2) == bytes(1024)
    h.good(sync_cache10())
