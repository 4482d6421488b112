"""The core-thread bookkeeping of cluster ROD tokens (odxtarget.copy.cluster_tokens): when a
gateway sweeps the cluster for dead tokens, and how long it counts the tokens it made. The
RADOS side runs against a real cluster in tests/integration/on_rbd/test_cluster_tokens.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odxtarget.copy.cluster_tokens import SWEEP_SECONDS, ClusterTokens, rados_backend
from odxtarget.storage.memory import MemoryBackend
from odxtarget.storage.rbd_snapshots import RadosBacked


@dataclass
class Spec:
    pool: str = "rbd"
    image: str = "vm"
    conf: str = "/etc/ceph/ceph.conf"


class FakeRados:
    """Satisfies ``RadosBacked``; the sweep it would run is never run here."""

    spec = Spec()
    lane = ("rbd", "/etc/ceph/ceph.conf", "rbd")

    def open_ioctx(self, pool: str, namespace: str = "") -> Any:
        raise AssertionError("no RADOS in unit tests")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Unit:
    backend: object


def test_only_rbd_backends_make_cluster_tokens():
    assert isinstance(FakeRados(), RadosBacked)
    assert rados_backend(Unit(FakeRados())) is not None
    assert rados_backend(Unit(MemoryBackend(1 << 20))) is None


def test_a_sweep_is_handed_out_once_per_interval_and_never_two_at_once():
    clock = Clock()
    tokens = ClusterTokens(clock, gateway="gw")
    backend = FakeRados()
    assert tokens.housekeeping([]) is None                  # no RBD LUs: nothing to sweep
    first = tokens.housekeeping([backend, backend])
    assert first is not None and first.arguments == ([backend],)    # each backend once
    clock.now += SWEEP_SECONDS * 3
    assert tokens.housekeeping([backend]) is None           # the first has not finished
    tokens._sweeping = False                                # what the sweep does when it ends
    clock.now += 1
    assert tokens.housekeeping([backend]) is not None
    tokens._sweeping = False
    clock.now += SWEEP_SECONDS - 0.5
    assert tokens.housekeeping([backend]) is None           # not yet: once per interval


def test_issued_tokens_count_until_their_inactivity_timeout_passes_here():
    clock = Clock()
    tokens = ClusterTokens(clock, gateway="gw")
    lu = object()
    token = bytes(8) + (7).to_bytes(8, "big") + bytes(496)
    tokens.remember(7, token, lu, "host-a", 10.0)
    tokens.remember(8, bytes(512), lu, "host-b", 10.0)
    assert (tokens.held_by("host-a"), tokens.held_by("host-b")) == (1, 1)
    clock.now += 8
    tokens.used_here(token, deleted=False)                  # its timer restarts
    clock.now += 8
    tokens.housekeeping([])
    assert (tokens.held_by("host-a"), tokens.held_by("host-b")) == (1, 0)
    tokens.used_here(token, deleted=True)                   # DEL_TKN here
    assert tokens.held_by("host-a") == 0 and not tokens.issued
