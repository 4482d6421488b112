"""``make run-cluster`` (scripts/run_cluster.py): a cluster and two gateways that serve one
target from the same images, and a clean stop on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import libiscsi
from tests.support.ceph import ceph_problem
from tests.support.daemon import LOOPBACK, free_port, port_accepts

REPO_ROOT = Path(__file__).resolve().parents[3]
IQN = "iqn.2026-11.org.odxtarget:cluster"
BLOCK = 512


RTPG = bytes((0xA3, 0x0A, 0, 0, 0, 0)) + (64).to_bytes(4, "big") + bytes(2)


def designators(page: bytes) -> list[tuple[int, int, bytes]]:
    """(association, designator type, designator) of each descriptor of VPD page 83h."""
    found, offset, end = [], 4, 4 + int.from_bytes(page[2:4], "big")
    while offset + 4 <= min(end, len(page)):
        kind, length = page[offset + 1], page[offset + 3]
        found.append(((kind >> 4) & 0x03, kind & 0x0F, page[offset + 4:offset + 4 + length]))
        offset += 4 + length
    return found


def port_designators(page: bytes) -> tuple[int, int]:
    """The relative target port and target port group of VPD page 83h."""
    values = {kind: int.from_bytes(value[2:4], "big") for association, kind, value in designators(page)
              if association == 1 and kind in (4, 5)}
    return values[4], values[5]


def logical_unit_names(page: bytes) -> list[bytes]:
    """The NAA designators of the logical unit (association 0) in VPD page 83h."""
    return [value for association, kind, value in designators(page) if association == 0 and kind == 3]


def test_two_gateways_serve_one_target_and_ctrl_c_stops_everything(tmp_path, ceph_cluster):
    assert ceph_problem() is None
    ports = [free_port(), free_port()]
    runner = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "run_cluster.py"), "--dir", str(tmp_path / "cluster"),
         "--ports", ",".join(map(str, ports))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while not all(port_accepts(LOOPBACK, port) for port in ports):
            assert runner.poll() is None, runner.stdout.read()
            assert time.monotonic() < deadline, "the gateways did not start"
            time.sleep(0.2)
        with (libiscsi.connect(LOOPBACK, ports[0], IQN, lun=0) as first,
              libiscsi.connect(LOOPBACK, ports[1], IQN, lun=1) as second):
            for session, lun in ((first, 0), (second, 1)):
                for _ in range(4):
                    if session.test_unit_ready(lun).good:
                        break
            assert first.read_capacity(0) == ((1 << 30) // BLOCK, BLOCK)
            assert first.write(0, 10, b"gateway A" + bytes(BLOCK - 9), BLOCK).good
            assert second.test_unit_ready(0).sense_key in (0, 6)
            assert second.test_unit_ready(0).good
            assert second.read(0, 10, 1, BLOCK).data.startswith(b"gateway A")
            # One logical unit behind both gateways: the same NAA designator (SPC-4 7.8.6),
            # reached through relative port 1 in group 1 and port 2 in group 2.
            pages = [first.inquiry(0, page=0x83).data, second.inquiry(0, page=0x83).data]
            assert logical_unit_names(pages[0]) == logical_unit_names(pages[1]) != []
            assert [port_designators(page) for page in pages] == [(1, 1), (2, 2)]
            # Implicit ALUA: both gateways report both groups, active/optimized.
            for session in (first, second):
                assert session.inquiry(0).data[5] & 0x30 == 0x10
                report = session.scsi_command(0, RTPG, data_in_len=64)
                assert report.good and report.data[:4] == (24).to_bytes(4, "big")
                assert [report.data[4 + 12 * index:4 + 12 * index + 12] for index in range(2)] == [
                    bytes((0, 1)) + group.to_bytes(2, "big") + bytes((0, 0, 0, 1, 0, 0)) + group.to_bytes(2, "big")
                    for group in (1, 2)]
    finally:
        runner.send_signal(signal.SIGINT)
        output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 0, output
    assert "run-cluster: stopped" in output
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "cluster")], capture_output=True, text=True).stdout
    assert not leftovers.strip(), f"processes left running: {leftovers}"
