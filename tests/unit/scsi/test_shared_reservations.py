"""Reservations shared by gateways (``odxtarget.scsi.shared_reservations``): the core's side,
with an in-memory store standing in for RADOS. Two harnesses are two gateways of one LU, on
relative target ports 1 and 2."""

from __future__ import annotations

import struct

import pytest

from odxtarget.scsi.constants import Ascq
from odxtarget.scsi.pr_state import Outcome, PrType
from odxtarget.scsi.shared_reservations import Adopted, ReservationChange, ReservationState
from odxtarget.scsi.types import ItNexus
from odxtarget.storage.work import StorageCall, StorageWork
from tests.unit.scsi.helpers import CHECK, CONFLICT, GOOD, TARGET_NAME, Harness, parse_sense, read10, reserve6, \
    release6, write10

REGISTER_AND_IGNORE, RESERVE, PREEMPT = 6, 1, 4
READ_KEYS = 0
WE_RO = PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY
NODE_A = ItNexus("iqn.1991-05.com.microsoft:a,i,0x400001370001", f"{TARGET_NAME},t,0x1", 1, 1)
NODE_B = ItNexus("iqn.1991-05.com.microsoft:b,i,0x400001370001", f"{TARGET_NAME},t,0x2", 2, 2)
KEY_A, KEY_B = 0xA, 0xB


class MemoryCluster:
    """A shared store in memory: one document and its version; a change is announced to every
    other gateway's LU at once, as a RADOS notify is acknowledged before the change completes."""

    def __init__(self) -> None:
        self.document: dict | None = None
        self.version = 0
        self.gateways: list[tuple[Harness, "GatewayStore"]] = []

    def join(self, harness: Harness, port: int) -> "GatewayStore":
        store = GatewayStore(self, harness)
        harness.lu.share_reservations(store, frozenset({port}))
        harness.lu.adopt_shared_reservations(self.document, self.version)
        self.gateways.append((harness, store))
        return store

    def transact(self, origin: "GatewayStore", change: ReservationChange) -> Adopted:
        state = ReservationState.from_document(self.document)
        outcome = change(state)
        self.document, self.version = state.to_document(), self.version + 1
        for harness, store in self.gateways:
            if store is not origin:
                lu = harness.lu
                lu.adopt_shared_reservations(self.document, self.version)
                for nexus, condition in outcome.unit_attentions:
                    if lu.serves_port(nexus):
                        lu.queue_unit_attention(nexus, condition)
        return Adopted(self.document, self.version, outcome)


class GatewayStore:
    def __init__(self, cluster: MemoryCluster, harness: Harness) -> None:
        self.cluster = cluster
        self.harness = harness
        self.changes = 0

    def change(self, change: ReservationChange) -> StorageWork:
        self.changes += 1
        return StorageCall("memory", self.cluster.transact, (self, change))


def prout(action: int, pr_type: int = 0) -> bytes:
    return bytes((0x5F, action, pr_type, 0, 0)) + struct.pack(">I", 24) + b"\x00"


def params(key: int = 0, action_key: int = 0) -> bytes:
    return struct.pack(">QQ4xB3x", key, action_key, 0)


def keys(harness: Harness, nexus: ItNexus) -> tuple[int, list[int]]:
    data = bytes(harness.run(bytes((0x5E, READ_KEYS, 0, 0, 0, 0, 0, 0x10, 0, 0)), nexus=nexus).data_in)
    generation, length = struct.unpack_from(">II", data)
    return generation, sorted(struct.unpack_from(">Q", data, 8 + i)[0] for i in range(0, length, 8))


@pytest.fixture
def two_gateways():
    cluster = MemoryCluster()
    first, second = Harness(), Harness()
    stores = cluster.join(first, 1), cluster.join(second, 2)
    for harness, nexus in ((first, NODE_A), (second, NODE_B)):
        harness.login(nexus)
    return cluster, first, second, stores


def test_a_registration_made_through_one_gateway_is_enforced_by_the_other(two_gateways):
    cluster, first, second, (store_1, store_2) = two_gateways
    assert first.run(prout(REGISTER_AND_IGNORE), params(action_key=KEY_A), nexus=NODE_A).status == GOOD
    assert first.run(prout(RESERVE, WE_RO), params(key=KEY_A), nexus=NODE_A).status == GOOD
    assert store_1.changes == 2 and store_2.changes == 0
    # Gateway 2 never saw a command, yet refuses B's write and reports A's key.
    assert second.run(write10(1, 1), bytes(512), nexus=NODE_B).status == CONFLICT
    assert second.run(read10(1, 1), nexus=NODE_B).status == GOOD
    assert keys(second, NODE_B) == (1, [KEY_A])
    assert second.lu.shared_version == first.lu.shared_version == cluster.version


def test_unit_attentions_reach_the_nexus_on_the_other_gateway_only_there(two_gateways):
    cluster, first, second, _ = two_gateways
    assert second.run(prout(REGISTER_AND_IGNORE), params(action_key=KEY_B), nexus=NODE_B).status == GOOD
    assert first.run(prout(REGISTER_AND_IGNORE), params(action_key=KEY_A), nexus=NODE_A).status == GOOD
    assert first.run(prout(RESERVE, WE_RO), params(key=KEY_A), nexus=NODE_A).status == GOOD
    assert first.run(prout(PREEMPT, WE_RO), params(key=KEY_A, action_key=KEY_B), nexus=NODE_A).status == GOOD
    preempted = second.run(read10(1, 1), nexus=NODE_B)
    assert preempted.status == CHECK
    sense = parse_sense(preempted.sense)
    assert (sense.key, sense.asc << 8 | sense.ascq) == (6, Ascq.REGISTRATIONS_PREEMPTED)
    # Gateway 1 does not hold B's unit attention: B is not its nexus.
    assert first.lu.pending_unit_attentions(NODE_B) == ()


def test_a_refused_change_leaves_the_shared_state_untouched(two_gateways):
    cluster, first, second, _ = two_gateways
    assert first.run(prout(REGISTER_AND_IGNORE), params(action_key=KEY_A), nexus=NODE_A).status == GOOD
    version = cluster.version
    # B is not registered: RESERVE is a RESERVATION CONFLICT and nothing is stored.
    assert second.run(prout(RESERVE, WE_RO), params(key=KEY_B), nexus=NODE_B).status == CONFLICT
    assert cluster.version == version
    assert first.lu.pr_reservation is None and second.lu.pr_reservation is None


def test_spc2_reservation_is_shared(two_gateways):
    cluster, first, second, _ = two_gateways
    assert first.run(reserve6(), nexus=NODE_A).status == GOOD
    assert second.lu.reservation_holder == NODE_A
    assert second.run(read10(1, 1), nexus=NODE_B).status == CONFLICT
    assert second.run(release6(), nexus=NODE_B).status == GOOD      # not the holder: no effect
    assert second.lu.reservation_holder == NODE_A
    assert first.run(release6(), nexus=NODE_A).status == GOOD
    assert second.run(read10(1, 1), nexus=NODE_B).status == GOOD


def test_an_older_state_is_never_adopted(two_gateways):
    cluster, first, second, _ = two_gateways
    old_document, old_version = cluster.document, cluster.version
    assert first.run(prout(REGISTER_AND_IGNORE), params(action_key=KEY_A), nexus=NODE_A).status == GOOD
    assert not second.lu.adopt_shared_reservations(old_document, old_version)
    assert keys(second, NODE_B) == (1, [KEY_A])


def test_state_document_round_trip_and_rejects_other_formats():
    state = ReservationState.empty()
    state.persistent.register(NODE_A, 0, KEY_A, ignore_existing=True, aptpl=True)
    state.persistent.reserve(NODE_A, KEY_A, WE_RO)
    state.spc2_holder = NODE_B
    copy = ReservationState.from_document(state.to_document())
    assert copy.persistent.registrations == {NODE_A: KEY_A}
    assert copy.persistent.reservation.holder == NODE_A and copy.persistent.reservation.type == WE_RO
    assert copy.persistent.aptpl and copy.persistent.generation == 1
    assert copy.spc2_holder == NODE_B
    assert copy.to_document() == state.to_document()
    with pytest.raises(ValueError):
        ReservationState.from_document({"version": 99})
    with pytest.raises(ValueError):
        ReservationState.from_document({"version": 1, "persistent": {"registrations": [{}]}})


def test_outcome_of_a_change_is_what_the_store_returns():
    """The handler delivers the store's outcome: a change's unit attentions come back in
    ``Adopted`` (here: CLEAR tells the other registrant)."""
    state = ReservationState.empty()
    state.persistent.register(NODE_A, 0, KEY_A, ignore_existing=True, aptpl=False)
    state.persistent.register(NODE_B, 0, KEY_B, ignore_existing=True, aptpl=False)
    outcome = state.persistent.clear(NODE_A, KEY_A)
    assert outcome == Outcome([(NODE_B, Ascq.RESERVATIONS_PREEMPTED)])
