"""``odxtarget copy``: the ODX initiator against the real daemon, and its fallback against tgtd.

Every copy is checked by reading both ranges back through the libiscsi binding and comparing
SHA-256 digests, so a copy that moved the wrong blocks, too few, or none fails.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from odxtarget.initiator import libiscsi, odx_copy
from odxtarget.initiator.odx_copy import CopyError, parse_iscsi_url
from tests.support.daemon import MIB, REPO_ROOT, DaemonSpec, LunSpec
from tests.support.tgt import TgtDaemon, TgtLun, tgt_available

pytestmark = [pytest.mark.integration]

BLOCK_SIZE = 512
IO_CHUNK_BYTES = MIB
DEFAULT_OPTIMAL_TRANSFER_BYTES = 64 * MIB   # the daemon's OPTIMAL TRANSFER COUNT (docs/odx.md)


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "odxtarget", "copy", *arguments],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def ranged(url: str, lba: int, blocks: int) -> str:
    return f"{url}?lba={lba}&blocks={blocks}"


def open_session(host: str, port: int, iqn: str, luns: tuple[int, ...]) -> libiscsi.IscsiSession:
    """Log in and take the power-on unit attention of every LUN, not only the login LUN."""
    session = libiscsi.connect(host, port, iqn, luns[0])
    for lun in luns:
        for _ in range(8):
            if session.test_unit_ready(lun).sense_key != 0x06:
                break
    return session


def daemon_session(daemon) -> libiscsi.IscsiSession:
    return open_session(daemon.host, daemon.port, daemon.iqn, tuple(spec.lun for spec in daemon.spec.luns))


def write_random(session: libiscsi.IscsiSession, lun: int, lba: int, size: int) -> str:
    """Fill the range with random bytes; return their digest."""
    digest = hashlib.sha256()
    for offset in range(0, size, IO_CHUNK_BYTES):
        data = os.urandom(min(IO_CHUNK_BYTES, size - offset))
        result = session.write(lun, lba + offset // BLOCK_SIZE, data, BLOCK_SIZE)
        assert result.good, result.describe()
        digest.update(data)
    return digest.hexdigest()


def read_digest(session: libiscsi.IscsiSession, lun: int, lba: int, size: int) -> str:
    digest = hashlib.sha256()
    for offset in range(0, size, IO_CHUNK_BYTES):
        blocks = min(IO_CHUNK_BYTES, size - offset) // BLOCK_SIZE
        result = session.read(lun, lba + offset // BLOCK_SIZE, blocks, BLOCK_SIZE)
        assert result.good, result.describe()
        digest.update(result.data)
    return digest.hexdigest()


def zeros_digest(size: int) -> str:
    return hashlib.sha256(bytes(size)).hexdigest()


TWO_LUNS = DaemonSpec(luns=[LunSpec(lun=0, size=128 * MIB), LunSpec(lun=1, size=128 * MIB)])
ONE_BIG_LUN = DaemonSpec(luns=[LunSpec(lun=0, size=256 * MIB)])


@pytest.mark.parametrize("odx_daemon", [TWO_LUNS], indirect=True)
def test_copy_within_one_lun_range_to_range(odx_daemon):
    size = 3 * MIB + 7 * BLOCK_SIZE          # not a multiple of the 1 MiB fallback chunk
    blocks = size // BLOCK_SIZE
    source_lba, destination_lba = 2048, 100_000
    with daemon_session(odx_daemon) as session:
        expected = write_random(session, 0, source_lba, size)
        before = read_digest(session, 0, destination_lba + blocks, BLOCK_SIZE)
        completed = run_cli(ranged(odx_daemon.url(0), source_lba, blocks),
                            f"{odx_daemon.url(0)}?lba={destination_lba}")
        assert completed.returncode == 0, completed.stderr
        assert f"{size} bytes" in completed.stdout and "method: odx" in completed.stdout
        assert completed.stderr == ""        # no progress when stderr is not a tty
        assert read_digest(session, 0, destination_lba, size) == expected
        assert read_digest(session, 0, source_lba, size) == expected
        # The block after the destination range is untouched.
        assert read_digest(session, 0, destination_lba + blocks, BLOCK_SIZE) == before


@pytest.mark.parametrize("odx_daemon", [TWO_LUNS], indirect=True)
def test_copy_across_two_luns_with_progress(odx_daemon):
    size = 8 * MIB
    with daemon_session(odx_daemon) as session:
        expected = write_random(session, 0, 0, size)
        completed = run_cli("--progress", ranged(odx_daemon.url(0), 0, size // BLOCK_SIZE),
                            f"{odx_daemon.url(1)}?lba=512")
        assert completed.returncode == 0, completed.stderr
        assert "method: odx" in completed.stdout
        assert "odxtarget copy: 8.0 MiB of 8.0 MiB (100%)" in completed.stderr
        assert "/s, ETA 00:00" in completed.stderr
        assert read_digest(session, 1, 512, size) == expected


@pytest.mark.parametrize("odx_daemon", [ONE_BIG_LUN], indirect=True)
def test_copy_larger_than_optimal_transfer_count_takes_several_writes(odx_daemon, monkeypatch):
    size = DEFAULT_OPTIMAL_TRANSFER_BYTES + 16 * MIB
    destination_lba = 128 * MIB // BLOCK_SIZE
    written_chunks: list[int] = []
    original = odx_copy._Copy.write_using_token

    def counting(self, token, offset_into_rod, blocks):
        written = original(self, token, offset_into_rod, blocks)
        written_chunks.append(written)
        return written

    monkeypatch.setattr(odx_copy._Copy, "write_using_token", counting)
    with daemon_session(odx_daemon) as session:
        expected = write_random(session, 0, 0, size)
        summary = odx_copy.copy_range(parse_iscsi_url(ranged(odx_daemon.url(0), 0, size // BLOCK_SIZE)),
                                      parse_iscsi_url(f"{odx_daemon.url(0)}?lba={destination_lba}"),
                                      allow_fallback=False)
        assert summary.method == "odx" and summary.bytes == size
        assert len(written_chunks) >= 2
        assert max(written_chunks) <= DEFAULT_OPTIMAL_TRANSFER_BYTES // BLOCK_SIZE
        assert sum(written_chunks) == size // BLOCK_SIZE
        assert read_digest(session, 0, destination_lba, size) == expected


@pytest.mark.parametrize("odx_daemon", [TWO_LUNS], indirect=True)
def test_no_odx_copies_and_zeroes_by_read_and_write_alone(odx_daemon):
    size = 2 * MIB + 3 * BLOCK_SIZE
    with daemon_session(odx_daemon) as session:
        expected = write_random(session, 0, 0, size)
        completed = run_cli("--no-odx", ranged(odx_daemon.url(0), 0, size // BLOCK_SIZE), odx_daemon.url(1))
        assert completed.returncode == 0, completed.stderr
        assert f"{size} bytes" in completed.stdout and "method: fallback" in completed.stdout
        assert read_digest(session, 1, 0, size) == expected
        completed = run_cli("--zero", "--no-odx", ranged(odx_daemon.url(1), 0, MIB // BLOCK_SIZE))
        assert completed.returncode == 0 and "method: fallback" in completed.stdout, completed.stderr
        assert read_digest(session, 1, 0, MIB) == zeros_digest(MIB)
    completed = run_cli("--no-odx", "--no-fallback", odx_daemon.url(0), odx_daemon.url(1))
    assert completed.returncode == 1 and "leave no way to copy" in completed.stderr


@pytest.mark.parametrize("odx_daemon", [TWO_LUNS], indirect=True)
def test_zero_token_zeroes_only_the_range(odx_daemon):
    with daemon_session(odx_daemon) as session:
        write_random(session, 1, 0, 4 * MIB)
        untouched = read_digest(session, 1, 3 * MIB // BLOCK_SIZE, MIB)
        completed = run_cli("--zero", "--no-fallback", ranged(odx_daemon.url(1), 1024, 2 * MIB // BLOCK_SIZE))
        assert completed.returncode == 0, completed.stderr
        assert f"{2 * MIB} bytes" in completed.stdout and "method: odx" in completed.stdout
        assert read_digest(session, 1, 1024, 2 * MIB) == zeros_digest(2 * MIB)
        assert read_digest(session, 1, 0, 1024 * BLOCK_SIZE) != zeros_digest(1024 * BLOCK_SIZE)
        assert read_digest(session, 1, 3 * MIB // BLOCK_SIZE, MIB) == untouched


@pytest.mark.parametrize("odx_daemon", [TWO_LUNS], indirect=True)
def test_refusals_are_one_line_errors(odx_daemon):
    cases = [
        ("not-a-url", odx_daemon.url(1), "not an iscsi:// URL"),
        (f"{odx_daemon.url(0)}?lba=x", odx_daemon.url(1), "lba must be a non-negative integer"),
        (f"iscsi://{odx_daemon.host}:{odx_daemon.port}/{odx_daemon.iqn}", odx_daemon.url(1), "path must be /IQN/LUN"),
        (ranged(odx_daemon.url(0), 0, 100), ranged(odx_daemon.url(0), 50, 100), "overlap"),
        (ranged(odx_daemon.url(0), 0, 100), ranged(odx_daemon.url(1), 0, 99), "differ in length"),
        (odx_daemon.url(0), f"{odx_daemon.url(1)}?lba=1", "beyond the capacity"),
    ]
    for source, destination, message in cases:
        completed = run_cli(source, destination)
        assert completed.returncode == 1, (source, destination, completed.stdout)
        assert message in completed.stderr, completed.stderr
        assert len(completed.stderr.strip().splitlines()) == 1 and "Traceback" not in completed.stderr
    completed = run_cli(odx_daemon.url(0), f"iscsi://{odx_daemon.host}:{odx_daemon.port}/iqn.2026-11.org.nope:x/0")
    assert completed.returncode == 1 and "login" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


def test_url_parsing():
    url = parse_iscsi_url("iscsi://alice%s3cret@[::1]:3261/iqn.2026-11.org.x:y/3?lba=8&blocks=16")
    assert (url.user, url.password, url.host, url.port, url.iqn, url.lun, url.lba, url.blocks) == \
        ("alice", "s3cret", "::1", 3261, "iqn.2026-11.org.x:y", 3, 8, 16)
    url = parse_iscsi_url("iscsi://127.0.0.1/iqn.2026-11.org.x:y/0")
    assert (url.port, url.user, url.lba, url.blocks) == (3260, None, 0, None)
    for bad in ("iscsi://h/iqn/0?blocks=0", "iscsi://h:99999/iqn/0", "iscsi://h/iqn/0?size=3", "iscsi:///iqn/0"):
        with pytest.raises(CopyError):
            parse_iscsi_url(bad)


@pytest.mark.skipif(not tgt_available(), reason="tgtd not installed")
def test_fallback_against_a_target_without_odx(tmp_path: Path):
    size = 64 * MIB
    images = []
    for name in ("a.img", "b.img"):
        image = tmp_path / name
        with image.open("wb") as handle:
            handle.truncate(size)
        images.append(image)
    iqn = "iqn.2026-11.org.odxtarget:tgt-fallback"
    with TgtDaemon(iqn, [TgtLun(1, images[0]), TgtLun(2, images[1])], tmp_path / "tgtd.log").start() as tgt:
        copied = 3 * MIB + 5 * BLOCK_SIZE
        with open_session(tgt.host, tgt.port, iqn, (1, 2)) as session:
            expected = write_random(session, 1, 0, copied)
            refused = run_cli("--no-fallback", ranged(tgt.url(1), 0, copied // BLOCK_SIZE), tgt.url(2))
            assert refused.returncode == 1 and "--no-fallback" in refused.stderr
            assert read_digest(session, 2, 0, copied) == zeros_digest(copied)
            completed = run_cli(ranged(tgt.url(1), 0, copied // BLOCK_SIZE), f"{tgt.url(2)}?lba=8")
            assert completed.returncode == 0, completed.stderr
            assert "method: fallback" in completed.stdout and f"{copied} bytes" in completed.stdout
            assert read_digest(session, 2, 8, copied) == expected
            zeroed = run_cli("--zero", ranged(tgt.url(2), 8, MIB // BLOCK_SIZE))
            assert zeroed.returncode == 0 and "method: fallback" in zeroed.stdout, zeroed.stderr
            assert read_digest(session, 2, 8, MIB) == zeros_digest(MIB)
            after = read_digest(session, 2, 8 + MIB // BLOCK_SIZE, BLOCK_SIZE)
            assert after != zeros_digest(BLOCK_SIZE)     # the block after the zeroed range survives
