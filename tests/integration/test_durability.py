"""Crash durability: what the daemon acknowledged as durable survives SIGKILL.

SBC-4 5.40 (WRITE with FUA=1): the device server writes the data to the medium before returning
GOOD. SBC-4 5.24 (SYNCHRONIZE CACHE): the logical blocks in the range are on the medium when the
command completes with GOOD. A SIGKILLed daemon loses everything it held only in its own memory,
so after a restart on the same files every FUA write acknowledged with GOOD, and every write
acknowledged before a SYNCHRONIZE CACHE that completed with GOOD, must read back unchanged.
Writes that were acknowledged but not yet synchronised, and writes in flight at the kill, carry
no promise and are not checked.

Each write goes to fresh LBAs and carries its own sequence number in every block, so a block that
reads back wrong points to the exact write that was lost.
"""

from __future__ import annotations

import random
import struct
import threading
import time
from dataclasses import dataclass, field

import pytest

from tests.support import libiscsi
from tests.support.daemon import MIB, DaemonSpec, LunSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LUN = 0
LUN_SIZE = 256 * MIB          # sparse; large enough that no round runs out of fresh LBAs
KILL_ROUNDS = 3
MIN_RUN_SECONDS, MAX_RUN_SECONDS = 0.4, 1.2
MAX_BYTES_PER_WRITE = 16 * 1024
MAX_WRITES_PER_SYNC = 8
MIN_DURABLE_WRITES_PER_ROUND = 10
BLOCK_MAGIC = b"ODXDURAB"
_BLOCK_HEADER = struct.Struct(">8sQQI")   # magic, write sequence number, LBA, round


@dataclass(slots=True)
class WriteRecord:
    sequence: int
    lba: int
    data: bytes
    fua: bool


@dataclass(slots=True)
class WorkloadLog:
    """What the daemon promised: writes it made durable (FUA or covered by a completed sync)."""

    durable: list[WriteRecord] = field(default_factory=list)
    acknowledged_unsynced: int = 0
    transport_failure: str | None = None


def block_payload(sequence: int, lba: int, round_number: int, block_size: int) -> bytes:
    header = _BLOCK_HEADER.pack(BLOCK_MAGIC, sequence, lba, round_number)
    filler = random.Random(sequence * 1_000_003 + lba).randbytes(block_size - len(header))
    return header + filler


def run_workload(
    session: libiscsi.IscsiSession,
    block_size: int,
    first_lba: int,
    last_lba: int,
    round_number: int,
    log: WorkloadLog,
    stop: threading.Event,
    sequence_start: int,
) -> None:
    """Alternate FUA writes and batches of plain writes closed by SYNCHRONIZE CACHE(10) until
    the connection dies (the kill) or ``stop`` is set."""
    rng = random.Random(round_number)
    lba = first_lba
    sequence = sequence_start
    pending: list[WriteRecord] = []

    def next_write(fua: bool) -> WriteRecord | None:
        nonlocal lba, sequence
        blocks = rng.randint(1, max(1, MAX_BYTES_PER_WRITE // block_size))
        if lba + blocks > last_lba:
            return None
        sequence += 1
        data = b"".join(block_payload(sequence, lba + i, round_number, block_size) for i in range(blocks))
        record = WriteRecord(sequence, lba, data, fua)
        lba += blocks
        return record

    while not stop.is_set():
        if rng.random() < 0.5:
            record = next_write(fua=True)
            if record is None:
                return
            result = session.write(LUN, record.lba, record.data, block_size, fua=True)
            if not result.acknowledged:
                log.transport_failure = result.describe()
                return
            assert result.good, f"FUA write at LBA {record.lba} failed: {result.describe()}"
            log.durable.append(record)
        else:
            for _ in range(rng.randint(1, MAX_WRITES_PER_SYNC)):
                record = next_write(fua=False)
                if record is None:
                    return
                result = session.write(LUN, record.lba, record.data, block_size)
                if not result.acknowledged:
                    log.transport_failure = result.describe()
                    return
                assert result.good, f"write at LBA {record.lba} failed: {result.describe()}"
                pending.append(record)
                log.acknowledged_unsynced += 1
            result = session.synchronize_cache(LUN)
            if not result.acknowledged:
                log.transport_failure = result.describe()
                return
            assert result.good, f"SYNCHRONIZE CACHE failed: {result.describe()}"
            log.durable.extend(pending)
            log.acknowledged_unsynced -= len(pending)
            pending.clear()


def verify_durable(session: libiscsi.IscsiSession, block_size: int, records: list[WriteRecord]) -> list[str]:
    lost = []
    for record in records:
        blocks = len(record.data) // block_size
        result = session.read(LUN, record.lba, blocks, block_size)
        if not result.good:
            lost.append(f"write #{record.sequence} LBA {record.lba}+{blocks}: read failed {result.describe()}")
        elif result.data != record.data:
            kind = "FUA" if record.fua else "synced"
            lost.append(f"{kind} write #{record.sequence} at LBA {record.lba} (+{blocks} blocks) not intact")
    return lost


def clear_unit_attentions(session: libiscsi.IscsiSession) -> None:
    for _ in range(8):
        if session.test_unit_ready(LUN).good:
            return
    raise AssertionError("LUN keeps reporting unit attentions")


def run_until_killed(daemon, block_size: int, first_lba: int, last_lba: int, round_number: int,
                     sequence_start: int, rng: random.Random) -> WorkloadLog:
    """One round: start the workload, let it run a random while, SIGKILL the daemon under it."""
    session = libiscsi.connect(daemon.host, daemon.port, daemon.iqn, LUN, timeout_seconds=20)
    clear_unit_attentions(session)
    log = WorkloadLog()
    stop = threading.Event()
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            run_workload(session, block_size, first_lba, last_lba, round_number, log, stop, sequence_start)
        except BaseException as error:  # re-raised by the main thread
            failures.append(error)

    thread = threading.Thread(target=worker, name=f"workload-{round_number}")
    thread.start()
    deadline = time.monotonic() + 30
    while len(log.durable) < MIN_DURABLE_WRITES_PER_ROUND and thread.is_alive():
        assert time.monotonic() < deadline, "workload made no progress"
        time.sleep(0.01)
    time.sleep(rng.uniform(MIN_RUN_SECONDS, MAX_RUN_SECONDS))
    daemon.kill()                                       # mid-workload, no warning
    thread.join(timeout=60)
    assert not thread.is_alive(), "workload thread hung after the daemon was killed"
    session.abandon()
    if failures:
        raise failures[0]
    assert log.transport_failure is not None, "workload ended before the kill (LUN too small?)"
    assert len(log.durable) >= MIN_DURABLE_WRITES_PER_ROUND
    return log


@pytest.mark.parametrize("block_size", [512, 4096])
def test_acknowledged_durable_writes_survive_sigkill(daemon_factory, block_size):
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(lun=LUN, size=LUN_SIZE, block_size=block_size)]))
    blocks_per_round = LUN_SIZE // block_size // KILL_ROUNDS
    durable: list[WriteRecord] = []
    rng = random.Random(block_size)

    for round_number in range(KILL_ROUNDS):
        sequence_start = max((record.sequence for record in durable), default=0)
        log = run_until_killed(daemon, block_size, round_number * blocks_per_round,
                               (round_number + 1) * blocks_per_round, round_number, sequence_start, rng)
        durable.extend(log.durable)
        daemon.start()
        with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, LUN, timeout_seconds=20) as checker:
            clear_unit_attentions(checker)
            lost = verify_durable(checker, block_size, durable)
        assert not lost, (
            f"round {round_number}: {len(lost)} of {len(durable)} durable writes lost after SIGKILL:\n"
            + "\n".join(lost[:20])
        )


def test_verifier_notices_a_lost_write(daemon_factory):
    """Guard against a vacuous pass: destroy one durable write in the image behind the daemon's
    back and the verification must name exactly that write."""
    block_size = 512
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(lun=LUN, size=LUN_SIZE, block_size=block_size)]))
    log = run_until_killed(daemon, block_size, 0, LUN_SIZE // block_size, 0, 0, random.Random(7))
    victim = log.durable[len(log.durable) // 2]
    with daemon.image_path(LUN).open("r+b") as image:
        image.seek(victim.lba * block_size)
        image.write(bytes(block_size))
    daemon.start()
    with libiscsi.connect(daemon.host, daemon.port, daemon.iqn, LUN, timeout_seconds=20) as checker:
        clear_unit_attentions(checker)
        lost = verify_durable(checker, block_size, log.durable)
    assert len(lost) == 1 and f"#{victim.sequence} " in lost[0]
