"""COMPARE AND WRITE on RBD across gateways (SBC-4 5.3; odxtarget.storage.rbd_compare):
librbd's compare-and-write makes the OSD the arbiter, so two gateways with no lock in common
still let only one of two racing commands write, and a miscompare names its first byte."""

from __future__ import annotations

import struct
import threading

import pytest

from odxtarget.config import RbdConfig
from odxtarget.storage.rbd import RbdBackend
from tests.support import libiscsi
from tests.support.daemon import MIB, DaemonSpec, LunSpec

SIZE = 16 * MIB
OBJECT = 4 * MIB          # RBD's default object size
BLOCK = 512
SENSE_MISCOMPARE = 0x0E
ASC_MISCOMPARE_DURING_VERIFY = 0x1D
ROUNDS_PER_CONTENDER = 60


def _read(backend: RbdBackend, offset: int, length: int) -> bytes:
    buffer = bytearray(length)
    backend.read_into(offset, memoryview(buffer))
    return bytes(buffer)


def _counter(value: int, length: int) -> bytes:
    return struct.pack(">Q", value) * (length // 8)


@pytest.fixture
def gateways(rbd_image):
    """Two backends on one image, each with its own cluster connections and range lock: what
    two gateway daemons have in common is the cluster alone."""
    rbd = RbdConfig(**rbd_image(SIZE))
    opened = [RbdBackend(rbd, SIZE), RbdBackend(rbd, SIZE)]
    try:
        yield opened
    finally:
        for backend in opened:
            backend.close()


@pytest.mark.parametrize(("offset", "length", "first_difference", "written"), [
    (0, 512, 0, True),                    # one sector: one librbd call
    (8192, 512, 511, True),
    (OBJECT + 4096, 512, 100, True),      # in the second object
    (3 * OBJECT + 1024, 512, 37, False),  # an object nobody wrote: compared with zeros
    (16384, 4096, 2 * 512 + 5, True),     # the third sector of a chain
    (OBJECT - 1024, 2048, 1024 + 3, True),  # a chain whose miscompare is in the next object
])
def test_a_miscompare_names_the_first_differing_byte_and_writes_nothing(gateways, offset, length,
                                                                        first_difference, written):
    backend = gateways[0]
    original = bytes((offset // 512 + index) % 251 for index in range(length)) if written else bytes(length)
    if written:
        backend.write(offset, original)
    expected = bytearray(original)
    expected[first_difference] ^= 0xFF
    assert backend.compare_and_write(offset, memoryview(bytes(expected)), memoryview(b"N" * length)) == first_difference
    assert _read(backend, offset, length) == original          # earlier sectors put back
    assert backend.compare_and_write(offset, memoryview(original), memoryview(b"N" * length)) == -1
    assert _read(gateways[1], offset, length) == b"N" * length


def _contend(compare_and_write, read, rounds: int) -> int:
    """Flip the counter from the value read to the next ``rounds`` times; the successes."""
    successes = 0
    for _ in range(rounds):
        current = read()
        (value,) = struct.unpack_from(">Q", current)
        if compare_and_write(current, _counter(value + 1, len(current))):
            successes += 1
    return successes


def _race(contenders) -> list[int]:
    results = [0] * len(contenders)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = contenders[index]()
        except BaseException as error:      # reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(contenders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize(("offset", "length"), [
    (BLOCK * 7, 512),                     # one sector: atomic at the OSD
    (OBJECT - 2048, 4096),                # a chain of eight sectors over two objects
])
def test_two_gateways_flipping_one_counter_never_both_win(gateways, offset, length):
    gateways[0].write(offset, _counter(0, length))

    def contender(backend: RbdBackend):
        return lambda: _contend(
            lambda old, new: backend.compare_and_write(offset, memoryview(old), memoryview(new)) == -1,
            lambda: _read(backend, offset, length), ROUNDS_PER_CONTENDER)

    successes = _race([contender(backend) for backend in gateways])
    final = _read(gateways[0], offset, length)
    assert final == _counter(struct.unpack_from(">Q", final)[0], length)     # never torn
    assert struct.unpack_from(">Q", final)[0] == sum(successes)
    assert all(successes), successes                                      # both took part


# -- through two gateway daemons ----------------------------------------------------------------

def compare_and_write_cdb(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQ3xBBB", 0x89, 0, lba, blocks, 0, 0)


def information(sense: bytes) -> int | None:
    """The INFORMATION field of fixed (70h/71h) or descriptor (72h/73h) sense data (SPC-4 4.4)."""
    code = sense[0] & 0x7F
    if code in (0x70, 0x71):
        return int.from_bytes(sense[3:7], "big") if sense[0] & 0x80 else None
    offset = 8
    while offset + 2 <= len(sense):
        kind, length = sense[offset], sense[offset + 1]
        if kind == 0x00:
            return int.from_bytes(sense[offset + 4:offset + 12], "big")
        offset += 2 + length
    return None


@pytest.fixture
def two_gateway_daemons(rbd_image, daemon_factory):
    rbd = rbd_image(SIZE)
    return [daemon_factory(DaemonSpec(luns=[LunSpec(size=SIZE, rbd=rbd)])) for _ in range(2)]


def test_compare_and_write_through_two_gateways_lets_one_writer_win_each_round(two_gateway_daemons):
    lba = 40
    with (libiscsi.connect(two_gateway_daemons[0].host, two_gateway_daemons[0].port,
                           two_gateway_daemons[0].iqn, lun=0) as first,
          libiscsi.connect(two_gateway_daemons[1].host, two_gateway_daemons[1].port,
                           two_gateway_daemons[1].iqn, lun=0) as second):
        assert first.write(0, lba, _counter(0, BLOCK), BLOCK).good

        def contender(session):
            def compare_and_write(old: bytes, new: bytes) -> bool:
                result = session.scsi_command(0, compare_and_write_cdb(lba, 1), data_out=old + new)
                assert result.good or (result.sense_key, result.asc) == (SENSE_MISCOMPARE,
                                                                         ASC_MISCOMPARE_DURING_VERIFY), result.describe()
                return result.good
            return lambda: _contend(compare_and_write, lambda: session.read(0, lba, 1, BLOCK).data,
                                    ROUNDS_PER_CONTENDER)

        successes = _race([contender(first), contender(second)])
        for session in (first, second):
            final = session.read(0, lba, 1, BLOCK).data
            assert final == _counter(sum(successes), BLOCK)
        assert all(successes), successes


@pytest.mark.parametrize(("blocks", "first_difference"), [(1, 37), (4, 2 * BLOCK + 5)])
def test_a_miscompare_through_a_gateway_reports_its_byte_in_information(two_gateway_daemons, blocks,
                                                                         first_difference):
    lba = 64
    length = blocks * BLOCK
    original = bytes(index % 253 for index in range(length))
    writer, checker = two_gateway_daemons
    with (libiscsi.connect(writer.host, writer.port, writer.iqn, lun=0) as first,
          libiscsi.connect(checker.host, checker.port, checker.iqn, lun=0) as second):
        assert first.write(0, lba, original, BLOCK).good
        expected = bytearray(original)
        expected[first_difference] ^= 0x5A
        result = second.scsi_command(0, compare_and_write_cdb(lba, blocks), data_out=bytes(expected) + b"W" * length)
        assert (result.sense_key, result.asc, result.ascq) == (SENSE_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY, 0)
        assert information(result.sense_raw) == first_difference   # SBC-4 5.3: offset in the data-out
        assert first.read(0, lba, blocks, BLOCK).data == original
        assert second.scsi_command(0, compare_and_write_cdb(lba, blocks), data_out=original + b"W" * length).good
        assert first.read(0, lba, blocks, BLOCK).data == b"W" * length
