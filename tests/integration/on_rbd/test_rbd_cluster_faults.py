"""Two gateways when part of Ceph hangs (docs/cluster.md, "When something fails"): the
monitor or the OSD frozen with SIGSTOP, so connections stay open and nothing answers, as
with a hung daemon or a network that drops packets."""

from __future__ import annotations

import threading

import pytest

from tests.support import libiscsi
from tests.support.daemon import DaemonStartError, LunSpec
from tests.support.gateways import CLUSTER_IQN, gateway, gateways

MIB = 1 << 20
SIZE = 16 * MIB
BLOCK = 512
#: A write through a gateway must still be waiting for the frozen OSD after this long.
FROZEN_SECONDS = 2.0
WAIT_SECONDS = 60.0


def session_to(daemon) -> libiscsi.IscsiSession:
    return libiscsi.connect(daemon.host, daemon.port, CLUSTER_IQN, lun=0, timeout_seconds=60)


@pytest.fixture
def pair(rbd_image, tmp_path):
    rbd = rbd_image(SIZE)
    with gateways(rbd, SIZE, tmp_path) as started:
        yield rbd, started


def test_without_monitors_running_gateways_serve_and_a_starting_one_stops_with_its_name(
        pair, ceph_cluster, tmp_path):
    rbd, (first, second) = pair
    with session_to(first) as to_first, session_to(second) as to_second:
        with ceph_cluster.paused("ceph-mon"):
            # I/O goes from librbd to the OSDs directly: the monitors are not on its path.
            assert to_first.write(0, 10, b"no monitor" + bytes(BLOCK - 10), BLOCK).good
            assert to_second.read(0, 10, 1, BLOCK).data.startswith(b"no monitor")
            third = gateway(3, 3, [LunSpec(size=SIZE, rbd=rbd, name="shared0")], tmp_path)
            with pytest.raises(DaemonStartError) as raised:
                third.start()
            third.stop()
        assert 'storage object "shared0"' in str(raised.value)
        assert "timed out" in str(raised.value)
        assert to_second.write(0, 11, b"monitor back" + bytes(BLOCK - 12), BLOCK).good


def test_a_frozen_osd_holds_writes_until_it_answers_and_loses_none(pair, ceph_cluster):
    _rbd, (first, second) = pair
    with session_to(first) as to_first, session_to(second) as to_second:
        outcome: list[libiscsi.Result] = []
        with ceph_cluster.paused("ceph-osd"):
            writer = threading.Thread(
                target=lambda: outcome.append(to_first.write(0, 20, b"held" + bytes(BLOCK - 4), BLOCK)))
            writer.start()
            writer.join(FROZEN_SECONDS)
            assert writer.is_alive() and outcome == []        # not acknowledged before the OSD has it
            assert to_second.test_unit_ready(0).good          # commands without I/O are answered
        writer.join(WAIT_SECONDS)
        assert [result.good for result in outcome] == [True]
        assert to_second.read(0, 20, 1, BLOCK).data.startswith(b"held")
