"""Reservations shared by two gateways through RADOS (docs/cluster.md, "Reservations"): the
Windows cluster sequence with its two nodes on different gateways, SPC-2 reservations,
concurrent changes from both gateways, and the state surviving a gateway's SIGKILL."""

from __future__ import annotations

import json
import threading

import pytest

from odxtarget.admin.client import AdminClient
from odxtarget.initiator import libiscsi
from tests.integration import raw_initiator as raw
from tests.support.daemon import MIB, DaemonSpec, LunSpec
from tests.support.reservations import (BLOCK, KEY_A, KEY_B, LUN, NODE_A, NODE_B, REGISTER_AND_IGNORE, RESERVE,
                                        WRITE_EXCLUSIVE, command, node, prout, prout_cdb, prout_data, read, read_keys, read_reservation,
                                        windows_cluster_sequence, write)

pytestmark = [pytest.mark.integration]

CLUSTER_IQN = "iqn.2026-11.org.odxtarget:shared-reservations"
RESERVE_6, RELEASE_6 = 0x16, 0x17


def gateways(daemon_factory, image: dict, count: int = 2) -> list:
    """``count`` gateways of one target over one RBD image, TPGT 1..count."""
    groups = list(range(1, count + 1))
    return [daemon_factory(DaemonSpec(iqn=CLUSTER_IQN, tpgt=tpgt, port_groups=groups,
                                      luns=[LunSpec(lun=LUN, size=16 * MIB, name="shared", rbd=image)]))
            for tpgt in groups]


def test_windows_cluster_sequence_with_the_nodes_on_different_gateways(daemon_factory, rbd_image):
    first, second = gateways(daemon_factory, rbd_image(16 * MIB))
    windows_cluster_sequence(first, second)
    # Both gateways report the same state afterwards (B holds it, A is preempted).
    for gateway in (first, second):
        with node(gateway, "iqn.1991-05.com.microsoft:observer") as observer:
            assert read_reservation(observer)[0] == KEY_B
            assert read_keys(observer)[1] == [KEY_B]


def test_spc2_reservation_holds_on_every_gateway_and_is_released_by_logout(daemon_factory, rbd_image):
    first, second = gateways(daemon_factory, rbd_image(16 * MIB))
    a = node(first, NODE_A)
    with node(second, NODE_B) as b:
        assert command(a, bytes((RESERVE_6, 0, 0, 0, 0, 0))).good
        assert write(b, 1, b"b" * BLOCK).status == libiscsi.STATUS_RESERVATION_CONFLICT
        assert command(b, bytes((RESERVE_6, 0, 0, 0, 0, 0))).status == libiscsi.STATUS_RESERVATION_CONFLICT
        assert write(a, 1, b"a" * BLOCK).good
        assert command(a, bytes((RELEASE_6, 0, 0, 0, 0, 0))).good
        assert write(b, 1, b"b" * BLOCK).good
        # Reserved again, then A's session ends: the release reaches the other gateway.
        assert command(a, bytes((RESERVE_6, 0, 0, 0, 0, 0))).good
        assert write(b, 2, b"b" * BLOCK).status == libiscsi.STATUS_RESERVATION_CONFLICT
        a.close()
        for _ in range(50):
            if write(b, 2, b"b" * BLOCK).good:
                break
            threading.Event().wait(0.1)
        else:
            pytest.fail("the SPC-2 reservation outlived its holder's logout on the other gateway")
        assert read(b, 2).data == b"b" * BLOCK


def test_concurrent_registrations_through_both_gateways_all_count(daemon_factory, rbd_image):
    """Changes racing from two gateways: RADOS refuses the stale write and the change is
    applied again, so none is lost and the generation counts every one (SPC-4 5.13.7)."""
    first, second = gateways(daemon_factory, rbd_image(16 * MIB))
    keys = {}
    errors: list[str] = []

    def register(gateway, index: int) -> None:
        initiator = f"iqn.1991-05.com.example:racer-{index}"
        key = 0x1000 + index
        try:
            with node(gateway, initiator) as session:
                for _ in range(3):           # register, change the key twice
                    result = prout(session, REGISTER_AND_IGNORE, action_key=key)
                    if not result.good:
                        errors.append(f"{initiator}: status {result.status:#x}")
                    key += 0x100
                keys[index] = key - 0x100
        except Exception as error:      # noqa: BLE001 - reported below
            errors.append(f"{initiator}: {error}")

    with node(first, NODE_A) as observer:
        start = read_keys(observer)[0]
        threads = [threading.Thread(target=register, args=((first, second)[i % 2], i)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors
        generation, registered = read_keys(observer)
    assert registered == sorted(keys.values())
    assert generation == start + 8 * 3
    with node(second, NODE_B) as other:
        assert read_keys(other) == (generation, registered)


def test_reservation_survives_a_gateway_sigkill_and_the_restarted_gateway_rejoins(daemon_factory, rbd_image):
    first, second = gateways(daemon_factory, rbd_image(16 * MIB))
    isid = b"\x40\x00\x01\x37\x00\x09"          # a fixed ISID: the same I_T nexus after the restart
    owner = raw.RawInitiator(first.host, first.port, initiator=NODE_A, isid=isid)
    owner.login(first.iqn)
    rsp, _ = owner.command(prout_cdb(REGISTER_AND_IGNORE), data_out=prout_data(action_key=KEY_A))
    assert rsp.status == 0
    rsp, _ = owner.command(prout_cdb(RESERVE, WRITE_EXCLUSIVE), data_out=prout_data(key=KEY_A))
    assert rsp.status == 0
    assert owner.write10(3, b"a" * BLOCK).status == 0
    owner.close()
    with node(second, NODE_B) as b:
        generation = read_keys(b)[0]

    first.kill()
    with node(second, NODE_B) as b:         # the other gateway keeps serving, state intact
        assert read_keys(b) == (generation, [KEY_A])
        assert read_reservation(b) == (KEY_A, WRITE_EXCLUSIVE)
        assert write(b, 3, b"b" * BLOCK).status == libiscsi.STATUS_RESERVATION_CONFLICT
        assert read(b, 3).data == b"a" * BLOCK

    first.start()                           # the restarted gateway rejoins with the shared state
    with node(first, NODE_B) as b_again:
        assert read_keys(b_again) == (generation, [KEY_A])
        assert read_reservation(b_again) == (KEY_A, WRITE_EXCLUSIVE)
        assert write(b_again, 3, b"b" * BLOCK).status == libiscsi.STATUS_RESERVATION_CONFLICT
    owner = raw.RawInitiator(first.host, first.port, initiator=NODE_A, isid=isid)
    try:
        owner.login(first.iqn)
        assert owner.write10(3, b"A" * BLOCK).status == 0     # the holder's nexus writes again
    finally:
        owner.close()
    with node(second, NODE_B) as b:
        assert read(b, 3).data == b"A" * BLOCK


def test_spc2_reservation_of_a_killed_gateway_is_released_when_it_restarts(daemon_factory, rbd_image):
    first, second = gateways(daemon_factory, rbd_image(16 * MIB))
    a = node(first, NODE_A)
    assert command(a, bytes((RESERVE_6, 0, 0, 0, 0, 0))).good
    first.kill()
    a.close()
    with node(second, NODE_B) as b:
        assert write(b, 4, b"b" * BLOCK).status == libiscsi.STATUS_RESERVATION_CONFLICT
        first.start()
        assert write(b, 4, b"b" * BLOCK).good


def test_an_rbd_lun_restored_live_shares_its_reservations_too(daemon_factory, rbd_image, tmp_path):
    """restoreconfig (docs/admin.md) creating an RBD-backed storage object live: the new LU
    follows the shared state before it is mapped, like one configured at start-up."""
    image = rbd_image(16 * MIB)
    first, = gateways(daemon_factory, image, count=1)
    second = daemon_factory(DaemonSpec(iqn=CLUSTER_IQN, tpgt=2, port_groups=[1, 2],
                                       luns=[LunSpec(lun=LUN, size=16 * MIB, name="local")]))
    config = json.loads(second.config_path.read_text())
    config["storage_objects"] = [{"name": "shared", "size": 16 * MIB, "rbd": image}]
    config["targets"][0]["luns"] = [{"lun": LUN, "storage_object": "shared"}]
    restored = tmp_path / "restored.json"
    restored.write_text(json.dumps(config))
    with node(first, NODE_A) as a:
        assert prout(a, REGISTER_AND_IGNORE, action_key=KEY_A).good
        assert prout(a, RESERVE, key=KEY_A, pr_type=WRITE_EXCLUSIVE).good
        socket_path = second.directory / "state" / "control.sock"
        for _ in range(100):                # it listens just after the iSCSI portal
            if socket_path.exists():
                break
            threading.Event().wait(0.05)
        with AdminClient(str(socket_path)) as client:
            client.call("config.restore", path=str(restored), confirm=True)
        with node(second, NODE_B) as b:
            assert read_reservation(b) == (KEY_A, WRITE_EXCLUSIVE)
            assert write(b, 6, b"b" * BLOCK).status == libiscsi.STATUS_RESERVATION_CONFLICT
            # And it follows changes made afterwards on the other gateway.
            assert prout(a, REGISTER_AND_IGNORE, action_key=0).good      # unregistering releases
            assert read_reservation(b) is None
            assert write(b, 6, b"b" * BLOCK).good


def test_a_logical_unit_reset_through_one_gateway_reaches_the_nexuses_of_the_other(daemon_factory, rbd_image):
    """SAM-5 6.3.3: every I_T nexus sees the reset, whichever gateway it uses; the TMF is
    answered only once the other gateway has reset the LU, so the very next command there
    sees the unit attention (libiscsi's MultipathIO.Reset does exactly this)."""
    first, second = gateways(daemon_factory, rbd_image(16 * MIB))
    with node(first, NODE_A) as a, node(second, NODE_B) as b:
        assert command(b, bytes((RESERVE_6, 0, 0, 0, 0, 0))).good
        assert write(a, 7, b"a" * BLOCK).status == libiscsi.STATUS_RESERVATION_CONFLICT
        assert a.lun_reset(LUN) == 0
        for session in (a, b):
            result = session.scsi_command(LUN, bytes(6))             # TEST UNIT READY
            assert (result.status, result.sense_key, result.asc, result.ascq) == (
                libiscsi.STATUS_CHECK_CONDITION, 0x06, 0x29, 0x03)  # BUS DEVICE RESET FUNCTION OCCURRED
        # The reset released B's SPC-2 reservation on both gateways.
        assert write(a, 7, b"a" * BLOCK).good
