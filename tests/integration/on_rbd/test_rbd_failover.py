"""Two gateway daemons serving one target from one RBD image, and what happens when one of
them dies (docs/cluster.md, "When something fails"): no acknowledged write is lost, the other
gateway keeps serving without an error, the dead one rejoins with the same logical unit, and a
multipath initiator carries its application across the failure.

The multipath initiator here is tests/support/multipath.py, a host-side model of
dm-multipath's round-robin, group-by-ALUA-priority, retry-on-another-path behaviour on
libiscsi; the kernel's dm-multipath runs in the guest suite (tests/vm/test_multipath_on_rbd.py).
"""

from __future__ import annotations

import struct
import threading
import time

import pytest

from tests.support import libiscsi
from tests.support.daemon import MIB, DaemonProcess
from tests.support.gateways import CLUSTER_IQN, gateways
from tests.support.multipath import (
    ACTIVE_OPTIMIZED, RTPG_CDB, MultipathDevice, Path, group_states, logical_unit_names,
)

SIZE = 64 * MIB
BLOCK = 512
BLOCKS_PER_WRITE = 8
#: Writes each gateway must have acknowledged before one is killed, and after.
WRITES_BEFORE_KILL = 40
WRITES_AFTER_KILL = 40
WAIT_SECONDS = 120.0


def pattern(writer: int, sequence: int) -> bytes:
    """The bytes of one write: who wrote it and its number, in every 16 bytes."""
    return struct.pack(">QQ", writer, sequence) * (BLOCKS_PER_WRITE * BLOCK // 16)


def slot(writer: int, sequence: int) -> int:
    """The LBA of one write: each writer its own interleaved slots, never reused."""
    return (2 * sequence + writer) * BLOCKS_PER_WRITE


def session_to(daemon: DaemonProcess, **options) -> libiscsi.IscsiSession:
    return libiscsi.connect(daemon.host, daemon.port, CLUSTER_IQN, lun=0, **options)


class Writer(threading.Thread):
    """Writes pattern after pattern through one session and records which were acknowledged
    (GOOD); stops at ``stop`` or at the first command the gateway did not answer."""

    def __init__(self, session: libiscsi.IscsiSession, number: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.session, self.number, self.stop = session, number, stop
        self.acknowledged: list[int] = []
        self.unanswered: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        sequence = 0
        while not self.stop.is_set():
            try:
                result = self.session.write(0, slot(self.number, sequence), pattern(self.number, sequence), BLOCK)
            except libiscsi.ConnectionLostError as error:
                self.unanswered.append(str(error))
                return
            if not result.acknowledged:
                self.unanswered.append(result.describe())
                return
            if not result.good:
                self.errors.append(result.describe())
                return
            self.acknowledged.append(sequence)
            sequence += 1


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def verify(session: libiscsi.IscsiSession, writer: int, sequences: list[int]) -> None:
    for sequence in sequences:
        data = session.read(0, slot(writer, sequence), BLOCKS_PER_WRITE, BLOCK).data
        assert data == pattern(writer, sequence), f"writer {writer}'s acknowledged write {sequence} is lost"


@pytest.fixture
def pair(rbd_image, tmp_path):
    with gateways(rbd_image(SIZE), SIZE, tmp_path) as started:
        yield started


def test_sigkill_of_a_gateway_loses_no_acknowledged_write_and_the_other_keeps_serving(pair):
    first, second = pair
    stop = threading.Event()
    with session_to(first, timeout_seconds=10) as to_first, session_to(second) as to_second:
        writers = [Writer(to_first, 0, stop), Writer(to_second, 1, stop)]
        for writer in writers:
            writer.start()
        try:
            wait_for(lambda: all(len(writer.acknowledged) >= WRITES_BEFORE_KILL for writer in writers),
                     "writes through both gateways")
            first.kill()                                        # SIGKILL mid-stream
            writers[0].join(WAIT_SECONDS)
            killed_at = len(writers[1].acknowledged)
            wait_for(lambda: len(writers[1].acknowledged) >= killed_at + WRITES_AFTER_KILL or not writers[1].is_alive(),
                     "writes through the surviving gateway")
        finally:
            stop.set()
            for writer in writers:
                writer.join(WAIT_SECONDS)
        assert not writers[0].is_alive() and writers[0].unanswered, "the killed gateway still answered"
        assert writers[1].unanswered == [] and writers[1].errors == []      # the survivor saw nothing
        assert len(writers[1].acknowledged) >= killed_at + WRITES_AFTER_KILL
        assert to_second.test_unit_ready(0).good                 # no unit attention either
        verify(to_second, 0, writers[0].acknowledged)
        verify(to_second, 1, writers[1].acknowledged)
        to_first.abandon()


def test_a_restarted_gateway_rejoins_with_the_same_logical_unit_and_data(pair):
    first, second = pair
    with session_to(second) as to_second:
        with session_to(first) as to_first:
            assert to_first.write(0, 100, b"before" + bytes(BLOCK - 6), BLOCK).good
            names_before = logical_unit_names(to_first.inquiry(0, page=0x83).data)
            serial_before = to_first.inquiry(0, page=0x80).data
            to_first.abandon()
        first.kill()
        assert to_second.write(0, 200, b"while down" + bytes(BLOCK - 10), BLOCK).good
        first.start()
        with session_to(first) as to_first:
            assert to_first.read(0, 100, 1, BLOCK).data.startswith(b"before")
            assert to_first.read(0, 200, 1, BLOCK).data.startswith(b"while down")
            assert to_first.write(0, 300, b"after" + bytes(BLOCK - 5), BLOCK).good
            assert to_second.read(0, 300, 1, BLOCK).data.startswith(b"after")
            assert logical_unit_names(to_first.inquiry(0, page=0x83).data) == names_before != []
            assert logical_unit_names(to_second.inquiry(0, page=0x83).data) == names_before
            assert to_first.inquiry(0, page=0x80).data == serial_before
            for session in (to_first, to_second):
                report = session.scsi_command(0, RTPG_CDB, data_in_len=1024)
                assert report.good
                assert group_states(report.data) == {1: ACTIVE_OPTIMIZED, 2: ACTIVE_OPTIMIZED}


def test_a_multipath_initiator_fails_over_without_an_error_reaching_the_application(pair):
    first, second = pair
    device = MultipathDevice(CLUSTER_IQN, [Path(first.host, first.port), Path(second.host, second.port)],
                             timeout_seconds=10).connect()
    assert [path.target_port_group for path in device.paths] == [1, 2]
    written: list[int] = []
    killer = threading.Thread(target=first.kill)        # races the commands in flight
    try:
        for sequence in range(3 * WRITES_BEFORE_KILL):
            if sequence == WRITES_BEFORE_KILL:
                killer.start()
            lba = slot(0, sequence)
            cdb = struct.pack(">BBQIBB", 0x8A, 0, lba, BLOCKS_PER_WRITE, 0, 0)
            assert device.command(cdb, data_out=pattern(0, sequence)).good      # what the application sees
            written.append(sequence)
            read = struct.pack(">BBQIBB", 0x88, 0, lba, BLOCKS_PER_WRITE, 0, 0)
            assert device.command(read, data_in_len=BLOCKS_PER_WRITE * BLOCK).data == pattern(0, sequence)
        killer.join(WAIT_SECONDS)
        assert device.failovers == 1
        assert [path.failed for path in device.paths] == [True, False]
        assert device.errors == []           # no unit attention or other status on the path left
        with session_to(second) as check:
            verify(check, 0, written)
    finally:
        device.close()
