"""Reservations of an RBD-backed logical unit, shared by every gateway through RADOS
(docs/cluster.md, "Reservations").

Theory of operation
-------------------
The state (``odxtarget.scsi.shared_reservations.ReservationState``) is one RADOS object,
``odxtarget.reservations.<image>`` in the image's pool, holding its JSON document; the
object's version (which RADOS raises on every write) is the state's version. Nothing else
orders changes: no lock, no leader, no consensus of our own.

A change (``change``, on a worker thread): read the object and its version, apply the change
to a private copy, write the copy back with ``assert_version`` (``exclusive create`` when
there was none). When another gateway wrote in between, RADOS refuses the write (ERANGE or
EOVERFLOW) and the change is applied again to the newer state. A change that changes nothing
is not written. After the write, ``notify`` carries the new document, its version and the
outcome (unit attentions, the nexuses PREEMPT AND ABORT aborts) to every gateway watching
the object.

Every gateway watches the object. Its watch callback (a librados thread) hands the
announcement to the event loop, where the logical unit adopts the state and this gateway's
nexuses get their unit attentions and aborts; only then does the callback return, which
acknowledges the notify. So the command that made a change completes only after every
gateway that acknowledged enforces it. A gateway that does not acknowledge within
``NOTIFY_TIMEOUT_MS`` is dead or cut off from the cluster; RADOS drops its watch after
``WATCH_TIMEOUT_SECONDS``. The change stays made and the failure is logged.

A gateway reads the state before it serves its first command, and again whenever its watch
fails (its cluster session was lost), so it never enforces a state older than the last one it
could have missed. SPC-2 reservations held through a gateway are released when it restarts:
its I_T nexuses were lost with it (SAM-5 6.3.4).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol

from odxtarget.scsi.constants import Ascq
from odxtarget.scsi.pr_state import Outcome, nexus_from_document, nexus_to_document
from odxtarget.scsi.shared_reservations import Adopted, ReservationChange, ReservationState
from odxtarget.scsi.types import ItNexus
from odxtarget.storage.rbd import errno_of
from odxtarget.storage.work import StorageCall, StorageWork

log = logging.getLogger(__name__)

#: The object holding one logical unit's state, in its image's pool.
OBJECT_PREFIX = "odxtarget.reservations."
#: How long a change waits for every other gateway to adopt it.
NOTIFY_TIMEOUT_MS = 5000
#: How long RADOS keeps the watch of a gateway that stopped answering (librados default: 30).
WATCH_TIMEOUT_SECONDS = 10
#: How long a gateway's event loop may take to adopt an announced state.
ADOPT_TIMEOUT_SECONDS = 4.0
#: Attempts at a change that keeps meeting concurrent changes from other gateways.
MAX_ATTEMPTS = 64
#: Delay between attempts to watch again after the watch failed.
REWATCH_DELAY_SECONDS = 1.0
#: RADOS's answers to an ``assert_version`` that does not hold (the object moved on).
VERSION_RACE_ERRNOS = frozenset({errno.ERANGE, errno.EOVERFLOW, errno.EEXIST})


class ReservationHolder(Protocol):
    """What the store updates on the event loop: the logical unit (``odxtarget.scsi.lu``)."""

    name: str
    reservation_holder: ItNexus | None

    def adopt_shared_reservations(self, document: dict | None, version: int) -> bool: ...

    def serves_port(self, nexus: ItNexus) -> bool: ...

    def queue_unit_attention(self, nexus: ItNexus, condition: Ascq) -> None: ...


class TaskAborter(Protocol):
    """A SCSI target that maps the logical unit (``odxtarget.scsi.target.ScsiTarget``)."""

    def abort_tasks(self, lu: Any, nexuses: frozenset[ItNexus]) -> None: ...


class RadosReservations:
    """``SharedReservations`` of one logical unit in one RADOS object (module docstring).

    Args:
        ioctx: an open librados I/O context on the image's pool, for the state's reads and
            writes only: ``get_last_version`` reports the last operation of the whole context,
            so the watch and the notifications use ``events_ioctx``, another one.
        events_ioctx: a second I/O context on the same pool.
        instance_id: the cluster connection's instance id (``Rados.get_instance_id``): the
            notifier id of this gateway's own announcements.
        image: the RBD image's name; it names the object.
        lu: the logical unit to keep up to date.
        targets: the SCSI targets mapping ``lu`` on this gateway when asked (PREEMPT AND ABORT).
        loop: the event loop ``lu`` lives on.
        lane: the worker lane changes run on.
    """

    def __init__(self, ioctx: Any, events_ioctx: Any, instance_id: int, image: str, lu: ReservationHolder,
                 targets: Callable[[], Iterable[TaskAborter]], loop: asyncio.AbstractEventLoop, lane: Hashable):
        self._ioctx = ioctx
        self._events = events_ioctx
        self._instance_id = instance_id
        self.object_name = OBJECT_PREFIX + image
        self._lu = lu
        self._targets = targets
        self._loop = loop
        self._lane = lane
        self._io_lock = threading.Lock()      # a read or write and its get_last_version
        self._watch: Any = None
        self._closed = False
        #: SPC-2 releases made here and not yet stored (``release_spc2_of``).
        self._releases: list[ReservationChange] = []
        self._releases_lock = threading.Lock()

    # -- lifetime (blocking: call off the event loop) ----------------------------------------

    def open(self) -> tuple[dict | None, int]:
        """Watch the object (made empty if there is none: only an object can be watched),
        then read it: the state to adopt before serving. A change made between the two is
        announced to the watch, and versions order the two."""
        try:
            self._write(ReservationState.empty().to_document(), None)
        except OSError as error:
            if error.errno != errno.EEXIST:
                raise
        self._start_watch()
        return self._read()

    def close(self) -> None:
        self._closed = True
        watch, self._watch = self._watch, None
        for release in (watch and watch.close, self._events.close, self._ioctx.close):
            if release:
                try:
                    release()
                except Exception as error:  # closing must not fail a shutdown
                    log.warning("%s: closing the reservation state: %s", self._lu.name, error)

    # -- SharedReservations -------------------------------------------------------------------

    def change(self, change: ReservationChange) -> StorageWork:
        return StorageCall(self._lane, self.transact, (change,))

    def transact(self, change: ReservationChange, *, announce: bool = True) -> Adopted:
        """Apply ``change`` atomically and announce it (worker thread; module docstring).
        SPC-2 releases this gateway owes (``release_spc2_of``) are applied first, so no
        change is decided on a reservation this gateway already released."""
        for _ in range(MAX_ATTEMPTS):
            document, version = self._read()
            state = ReservationState.from_document(document)
            with self._releases_lock:
                releases = list(self._releases)
            for release in releases:
                release(state)
            outcome = change(state)          # a ScsiError leaves the object untouched
            new_document = state.to_document()
            if document is not None and new_document == document:
                self._settled(releases)
                return Adopted(document, version, outcome)
            try:
                new_version = self._write(new_document, version if document is not None else None)
            except OSError as error:
                if error.errno in VERSION_RACE_ERRNOS:
                    continue
                raise
            self._settled(releases)
            if announce:
                self._announce(new_document, new_version, outcome)
            return Adopted(new_document, new_version, outcome)
        raise OSError(errno.EBUSY, f"{self.object_name}: the reservation state kept changing under "
                      f"{MAX_ATTEMPTS} attempts")

    def announce_reset(self, condition: Ascq) -> StorageWork:
        return StorageCall(self._lane, self._announce_reset, (condition,))

    def _announce_reset(self, condition: Ascq) -> None:
        """Worker thread: release the SPC-2 reservation in the shared state (SPC-2 5.5.1) and
        have every other gateway reset the logical unit before returning (module docstring)."""
        adopted = self.transact(_release_any_spc2, announce=False)
        self._notify({"kind": "reset", "condition": condition.name, "version": adopted.version,
                      "state": adopted.document}, adopted.version)

    def release_spc2_of(self, nexus: ItNexus | None) -> None:
        """SPC-2 release on this gateway's reset (``nexus`` None) or I_T nexus loss (SPC-2
        5.5.1): owed at once by every change made here (``transact``), and stored in the
        background; failures are logged, and the next change stores it again."""
        def release(state: ReservationState) -> Outcome:
            if state.spc2_holder is not None and (nexus is None or state.spc2_holder == nexus):
                state.spc2_holder = None
            return Outcome()

        def done(future: concurrent.futures.Future) -> None:
            error = future.exception()
            if error is not None:
                log.error("%s: SPC-2 reservation release not shared yet: %s", self._lu.name, error)

        with self._releases_lock:
            self._releases.append(release)
        self._loop.run_in_executor(None, self.transact, _no_change).add_done_callback(done)

    def _settled(self, releases: list[ReservationChange]) -> None:
        """``releases`` are in the stored state: no longer owed."""
        if releases:
            with self._releases_lock:
                self._releases = [release for release in self._releases if release not in releases]

    def release_local_spc2(self, local: Callable[[ItNexus], bool]) -> Adopted:
        """At start-up: release an SPC-2 reservation held through this gateway before it
        restarted (blocking)."""
        def release(state: ReservationState) -> Outcome:
            if state.spc2_holder is not None and local(state.spc2_holder):
                log.info("%s: releasing the SPC-2 reservation of %s, lost with this gateway's restart",
                         self._lu.name, state.spc2_holder.initiator_port)
                state.spc2_holder = None
            return Outcome()
        return self.transact(release)

    # -- RADOS ----------------------------------------------------------------------------------

    def _read(self) -> tuple[dict | None, int]:
        import rados
        with self._io_lock:
            try:
                data = self._ioctx.read(self.object_name, 1 << 20)
            except rados.ObjectNotFound:
                return None, 0
            except rados.Error as error:
                raise os_error(error, f"reading {self.object_name}") from None
            version = self._ioctx.get_last_version()
        try:
            return json.loads(data), version
        except ValueError as error:
            raise OSError(errno.EIO, f"{self.object_name}: not a reservation state ({error})") from None

    def _write(self, document: dict, expected_version: int | None) -> int:
        import rados
        data = json.dumps(document, separators=(",", ":")).encode()
        with self._io_lock:
            operation = self._ioctx.create_write_op()
            try:
                if expected_version is None:
                    operation.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                else:
                    operation.assert_version(expected_version)
                operation.write_full(data)
                self._ioctx.operate_write_op(operation, self.object_name)
            except rados.Error as error:
                raise os_error(error, f"writing {self.object_name}") from None
            finally:
                self._ioctx.release_write_op(operation)
            return self._ioctx.get_last_version()

    def _announce(self, document: dict, version: int, outcome: Outcome) -> None:
        self._notify({
            "kind": "state", "version": version, "state": document,
            "unit_attentions": [[nexus_to_document(nexus), condition.name]
                                for nexus, condition in outcome.unit_attentions],
            "aborted": [nexus_to_document(nexus) for nexus in outcome.aborted],
        }, version)

    def _notify(self, content: dict, version: int) -> None:
        """Send ``content`` to every gateway watching; returns once all acknowledged, or
        logs the ones that did not."""
        import rados
        message = json.dumps({"from": self._instance_id, **content}, separators=(",", ":"))
        started = time.monotonic()
        try:
            self._events.notify(self.object_name, message, NOTIFY_TIMEOUT_MS)
        except rados.TimedOut:
            log.warning("%s: reservation state %d stored, but a gateway did not adopt it within %.1f s "
                        "(dead or cut off from the cluster; docs/cluster.md)", self._lu.name, version,
                        time.monotonic() - started)
        except rados.Error as error:
            log.warning("%s: reservation state %d stored, announcing it failed: %s", self._lu.name, version, error)

    # -- the watch ------------------------------------------------------------------------------

    def _start_watch(self) -> None:
        import rados
        try:
            self._watch = self._events.watch(self.object_name, self._on_notify, self._on_watch_error,
                                            WATCH_TIMEOUT_SECONDS)
        except rados.Error as error:
            raise os_error(error, f"watching {self.object_name}") from None

    def _on_notify(self, notify_id: int, notifier_id: int, watch_id: int, data: bytes) -> None:
        """librados thread: adopt an announced state on the loop, then acknowledge."""
        if notifier_id == self._instance_id:
            return                           # our own change: the command adopts it
        try:
            message = json.loads(data)
            version = int(message["version"])
            document = message["state"]
            if message["kind"] == "reset":
                reset: Ascq | None = Ascq[message["condition"]]
                attentions, aborted = [], frozenset()
            else:
                reset = None
                attentions = [(nexus_from_document(item), Ascq[name]) for item, name in message["unit_attentions"]]
                aborted = frozenset(nexus_from_document(item) for item in message["aborted"])
        except (ValueError, KeyError, TypeError) as error:
            log.error("%s: malformed reservation announcement ignored: %s", self._lu.name, error)
            return
        done: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._loop.call_soon_threadsafe(self._adopt_announced, document, version, attentions, aborted, reset,
                                            done)
            done.result(timeout=ADOPT_TIMEOUT_SECONDS)
        except RuntimeError:
            return                           # the loop is closed: the daemon is stopping
        except concurrent.futures.TimeoutError:
            log.error("%s: adopting reservation state %d took over %.0f s", self._lu.name, version,
                      ADOPT_TIMEOUT_SECONDS)

    def _adopt_announced(self, document: dict, version: int, attentions: list[tuple[ItNexus, Ascq]],
                         aborted: frozenset[ItNexus], reset: Ascq | None, done: concurrent.futures.Future) -> None:
        """Event loop: what the command (or the reset) did on the gateway that made the change."""
        try:
            lu = self._lu
            lu.adopt_shared_reservations(document, version)
            if reset is not None:
                log.info("%s: reset through another gateway: resetting it here too", lu.name)
                aborted = frozenset(nexus for nexus in lu.known_nexuses() if lu.serves_port(nexus))
                lu.reset(reset)
            for nexus, condition in attentions:
                if lu.serves_port(nexus):
                    lu.queue_unit_attention(nexus, condition)
            local = frozenset(nexus for nexus in aborted if lu.serves_port(nexus))
            if local:
                log.info("%s: %s on another gateway aborts the tasks of %d I_T nexus(es) here", lu.name,
                         "a reset" if reset is not None else "PREEMPT AND ABORT", len(local))
                for target in self._targets():
                    target.abort_tasks(lu, local)
        except Exception as error:          # noqa: BLE001 - logged; the acknowledgement must still go
            log.exception("%s: adopting reservation state %d failed: %s", self._lu.name, version, error)
        finally:
            done.set_result(None)

    def _on_watch_error(self, error: int) -> None:
        """librados thread: the watch is gone (this gateway lost its cluster session); watch
        again and re-read, so no change made meanwhile stays unseen."""
        log.warning("%s: reservation watch lost (%s); watching again", self._lu.name, _strerror(error))
        threading.Thread(target=self._rewatch, name="odxtarget-rewatch", daemon=True).start()

    def _rewatch(self) -> None:
        while not self._closed:
            old, self._watch = self._watch, None
            if old is not None:
                try:
                    old.close()
                except Exception:           # noqa: BLE001 - the watch is already broken
                    pass
            try:
                document, version = self.open()
            except (OSError, ValueError) as error:
                log.warning("%s: cannot watch the reservation state yet: %s", self._lu.name, error)
                time.sleep(REWATCH_DELAY_SECONDS)
                continue
            try:
                self._loop.call_soon_threadsafe(self._lu.adopt_shared_reservations, document, version)
            except RuntimeError:
                return
            log.info("%s: reservation watch restored at state %d", self._lu.name, version)
            return


def _no_change(state: ReservationState) -> Outcome:
    return Outcome()


def _release_any_spc2(state: ReservationState) -> Outcome:
    """A reset releases the SPC-2 reservation (SPC-2 5.5.1), whoever held it."""
    state.spc2_holder = None
    return Outcome()


def os_error(error: Exception, doing: str) -> OSError:
    """A librados exception as ``OSError`` with the errno it carries (EIO when none)."""
    return OSError(errno_of(error), f"{doing}: {error}")


def _strerror(code: int) -> str:
    import os
    return os.strerror(abs(code)) if code else "no error"
