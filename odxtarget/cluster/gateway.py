"""One gateway's side of the shared state: cluster connections and the shared reservations of
its RBD-backed logical units (docs/cluster.md).

Every RBD-backed logical unit keeps its reservations in RADOS, whether one gateway serves it
or several: the state then also outlives the daemon, and a second gateway can be added
without changing how the first one works.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from odxtarget.cluster.reservations import RadosReservations, TaskAborter, os_error
from odxtarget.scsi.lu import LogicalUnit
from odxtarget.scsi.types import ItNexus
from odxtarget.storage.rbd import RbdSpec, connect

log = logging.getLogger(__name__)


class ClusterGateway:
    """The shared reservations of one daemon's RBD-backed logical units."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._connections: dict[tuple[str, str, str | None], Any] = {}
        self._stores: dict[str, RadosReservations] = {}

    async def share_reservations(self, lu: LogicalUnit, spec: RbdSpec,
                                 targets: Callable[[], Iterable[TaskAborter]], local_ports: frozenset[int]) -> None:
        """Keep ``lu``'s reservations in RADOS from now on; returns once ``lu`` holds the shared
        state, before it serves a command.

        Raises:
            OSError: the cluster or the state object cannot be reached.
            ValueError: the stored state is not one this version wrote.
        """
        store = await asyncio.to_thread(self._open_store, lu, spec, targets)
        self._stores[lu.name] = store
        document, version = await asyncio.to_thread(store.open)
        lu.adopt_shared_reservations(document, version)
        lu.share_reservations(store, local_ports)

        def local(nexus: ItNexus) -> bool:
            return nexus.relative_target_port_id in local_ports

        adopted = await asyncio.to_thread(store.release_local_spc2, local)
        lu.adopt_shared_reservations(adopted.document, adopted.version)
        lu.event_listeners.append(lambda _lu, event, nexus: _release_spc2(store, _lu, event, nexus))
        registrations = len(lu.persistent_reservations.registrations)
        log.info("%s: reservations shared through RADOS object %s/%s (state %d, %d registration(s))",
                 lu.name, spec.pool, store.object_name, lu.shared_version, registrations)

    def forget(self, lu: LogicalUnit) -> None:
        """``lu`` is gone (its storage object was deleted): stop watching its state (blocking)."""
        store = self._stores.pop(lu.name, None)
        if store is not None:
            store.close()

    def close(self) -> None:
        """Stop watching and disconnect (blocking)."""
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        for connection in self._connections.values():
            try:
                connection.shutdown()
            except Exception as error:      # closing must not fail a shutdown
                log.warning("closing a cluster connection: %s", error)
        self._connections.clear()

    def _open_store(self, lu: LogicalUnit, spec: RbdSpec,
                    targets: Callable[[], Iterable[TaskAborter]]) -> RadosReservations:
        import rados
        key = (spec.conf, spec.client, spec.keyring)
        connection = self._connections.get(key)
        try:
            if connection is None:
                connection = self._connections[key] = connect(spec)
            ioctx = connection.open_ioctx(spec.pool)
            events_ioctx = connection.open_ioctx(spec.pool)
        except rados.Error as error:
            raise os_error(error, f"reaching the cluster of {spec.conf}") from None
        return RadosReservations(ioctx, events_ioctx, connection.get_instance_id(), spec.image, lu, targets, self._loop,
                                 lane=("reservations", key))


def _release_spc2(store: RadosReservations, lu: LogicalUnit, event: str, nexus: ItNexus | None) -> None:
    """An I_T nexus loss or logout here released its SPC-2 reservation locally (SPC-2 5.5.1);
    release it on every gateway. (A reset's release goes with its announcement:
    ``RadosReservations.announce_reset``.)"""
    if event == "nexus_lost" and nexus is not None and lu.shared_spc2_holder == nexus:
        store.release_spc2_of(nexus)
