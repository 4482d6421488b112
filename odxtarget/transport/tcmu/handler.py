"""The TCMU handler: finds our devices, serves their rings on the asyncio loop.

Theory of operation
-------------------
Devices are found by their uio name (``tcm-user/<hba>/<dev>/odx/<storage object>``): at
start-up by listing the ``uio`` subsystem, later from kernel uevents (pyudev monitor on the
kernel netlink source, so no udevd is needed) as they are added and removed. The TCM-USER
generic-netlink events (``netlink.py``) are an optional second source; either one calling
``attach``/``detach`` is idempotent.

Each device is one logical unit. Its uio fd is registered with ``loop.add_reader``; a wake-up
reads the event count, then the ``CommandProcessor`` runs the batch, and one ``write()`` on
the fd tells the kernel about all completions of the batch.

Restart and recovery (as tcmu-runner does since its PR #339): a device that already exists
when we start may hold commands a dead handler fetched and never answered. We block it
(``action/block_dev=1``: new commands get BUSY), reset the ring (``action/reset_ring=1``:
in-flight commands get BUSY, so initiators retry them instead of seeing errors), open and
map it, then unblock. Replaying old commands instead would be wrong: an initiator may
already have retried them elsewhere (tcmu-runner PR #299).

Storage work runs on ``StorageWorkers`` threads (one pool per lane, shared by all devices);
each device has its own ``CommandDriver``, which the processor hands the commands that wait
for storage. Their completions reach the ring on the loop, out of order, and are notified
once per batch the workers deliver (``_notify_soon``).

Clean stop: block, let what is running finish (up to ``grace`` seconds), abort what is left
and answer it BUSY so initiators retry, close, unblock. Commands arriving afterwards wait on
the ring until the next handler resets it or LIO's ``cmd_time_out`` fails them, so nothing
waits forever.

A device is never unmapped (nor its fd closed) while storage work of one of its commands runs
on a worker: that work may read a Data-Out view on the data area, whose blocks the kernel
frees only once the command is completed -- or hands to the next handler, after a
``reset_ring``, if our fd were closed. Giving a device up (removed, ring broken) therefore
aborts its commands, writes nothing more to the ring, and closes it when the last running
piece of work has returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from odxtarget.scsi.types import Status
from odxtarget.transport.tcmu.device import (CONFIGFS_ROOT, DEV_ROOT, SUBTYPE, SYSFS_ROOT,
                                             DeviceError, TcmuDeviceInfo, UioDevice, parse_uio_name,
                                             scan_sysfs)
from odxtarget.transport.tcmu.processor import DEVICE_LUN, CommandProcessor, ScsiPort, lu_nexus
from odxtarget.transport.tcmu.ring import CommandRing, RingError
from odxtarget.transport.workers import CommandDriver, StorageWorkers

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.scsi.lu import LogicalUnit

log = logging.getLogger(__name__)

#: How often a stopping handler looks whether its last commands have been answered.
STOP_POLL_SECONDS = 0.05
#: How long a stop waits for storage work already on a worker once the grace period is over
#: (the device stays mapped until that work returns, however long it takes).
STEP_WAIT_SECONDS = 30.0

_BUSY = int(Status.BUSY)


@dataclass(eq=False)
class ServedDevice:
    info: TcmuDeviceInfo
    device: UioDevice
    driver: CommandDriver
    processor: CommandProcessor = field(init=False)
    notify_scheduled: bool = False
    closing: bool = False


def default_target_factory(device_name: str, lu: "LogicalUnit") -> ScsiPort:
    from odxtarget.scsi.target import ScsiTarget

    return ScsiTarget(f"lio:{device_name}", {DEVICE_LUN: lu})


class TcmuHandler:
    """Serves every TCMU device of ``subtype`` whose config names one of ``logical_units``."""

    def __init__(self, logical_units: Mapping[str, "LogicalUnit"], *, subtype: str = SUBTYPE,
                 use_udev: bool = True, use_netlink: bool = True, sysfs_root: str = SYSFS_ROOT, dev_root: str = DEV_ROOT,
                 configfs_root: str = CONFIGFS_ROOT,
                 target_factory: Callable[[str, "LogicalUnit"], ScsiPort] = default_target_factory,
                 workers: StorageWorkers | None = None):
        self.logical_units = logical_units
        self.subtype = subtype
        self._use_udev = use_udev
        self._roots = {"sysfs_root": sysfs_root, "dev_root": dev_root, "configfs_root": configfs_root}
        self._sysfs_root = sysfs_root
        self._target_factory = target_factory
        self.devices: dict[str, ServedDevice] = {}     # by uio name
        self._closing: set[ServedDevice] = set()        # detached, closed once no work runs
        self._workers = workers
        self._owns_workers = workers is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._monitor: Any = None
        self._use_netlink = use_netlink
        self._events: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover and serve every existing device of ours, then follow uevents."""
        self._loop = asyncio.get_running_loop()
        if self._workers is None:
            self._workers = StorageWorkers(self._loop)
        if self._use_udev:
            self._start_monitor()
        if self._use_netlink:
            self._start_netlink()
        for info in self.discover():
            self.attach(info, recover=True)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop every device: block, let running commands finish, close, unblock."""
        self._stop_monitor()
        detached_earlier = set(self._closing)
        for uio in list(self.devices):
            await self._stop_device(uio, grace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_WAIT_SECONDS
        while detached_earlier & self._closing and loop.time() < deadline:
            await asyncio.sleep(STOP_POLL_SECONDS)
        for served in self._closing:
            log.warning("%s: storage work of %d commands still running; the device stays mapped "
                        "until it returns or the process exits", served.info.uio,
                        served.processor.in_flight)
        if self._owns_workers and self._workers is not None:
            self._workers.close()
            self._workers = None

    def rescan(self) -> None:
        """Attach devices we do not serve yet (after creating them through configfs)."""
        for info in self.discover():
            if info.uio not in self.devices:
                self.attach(info, recover=False)

    def discover(self) -> list[TcmuDeviceInfo]:
        if self._use_udev:
            try:
                return self._discover_udev()
            except ImportError:
                log.warning("pyudev is not installed: scanning sysfs instead")
        return scan_sysfs(self.subtype, self._sysfs_root)

    def _discover_udev(self) -> list[TcmuDeviceInfo]:
        import pyudev

        found = []
        for device in pyudev.Context().list_devices(subsystem="uio"):
            info = self._info_from_udev(device)
            if info is not None:
                found.append(info)
        return sorted(found, key=lambda i: i.minor)

    def _info_from_udev(self, device: Any) -> TcmuDeviceInfo | None:
        try:
            name = device.attributes.asstring("name")
        except (KeyError, UnicodeDecodeError):
            return None
        return parse_uio_name(device.sys_name, name, self.subtype)

    def _start_monitor(self) -> None:
        try:
            import pyudev
        except ImportError:
            log.warning("pyudev is not installed: devices added later are found only by rescan")
            self._use_udev = False
            return
        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
        monitor.filter_by("uio")
        monitor.start()
        self._monitor = monitor
        self._loop.add_reader(monitor.fileno(), self._on_uevents)

    def _stop_monitor(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None and self._loop is not None:
            self._loop.remove_reader(monitor.fileno())
        events, self._events = self._events, None
        if events is not None:
            if self._loop is not None:
                self._loop.remove_reader(events.fileno())
            events.close()

    def _start_netlink(self) -> None:
        from odxtarget.transport.tcmu.netlink import NetlinkError, TcmuEventSocket

        try:
            self._events = TcmuEventSocket()
        except NetlinkError as error:
            log.info("no TCM-USER netlink events (%s); relying on uevents", error)
            return
        self._loop.add_reader(self._events.fileno(), self._on_netlink)

    def _on_netlink(self) -> None:
        events = self._events
        if events is None:
            return
        for event in events.receive():
            if event.uio is None:
                continue
            if event.kind == "added":
                info = parse_uio_name(event.uio, event.name, self.subtype)
                if info is not None:
                    self.attach(info, recover=False)
            elif event.kind == "removed":
                self.detach(event.uio)
            elif event.kind == "reconfig" and event.uio in self.devices:
                # size/config/cache changes made behind our back: our configuration file is
                # the source of truth, so they are reported, not applied
                log.warning("%s: LIO reconfigured the device (%s); odxtarget keeps its own "
                            "configuration", event.uio, event)
        if events.overflowed:
            events.overflowed = False
            self.rescan()

    def _on_uevents(self) -> None:
        monitor = self._monitor
        if monitor is None:
            return
        while (device := monitor.poll(timeout=0)) is not None:
            if device.action == "add":
                info = self._info_from_udev(device)
                if info is not None and info.uio not in self.devices:
                    self.attach(info, recover=False)
            elif device.action == "remove":
                self.detach(device.sys_name)

    # -- devices ---------------------------------------------------------------------------

    def attach(self, info: TcmuDeviceInfo, *, recover: bool) -> bool:
        """Open and serve one device; with ``recover``, block + reset its ring around the
        open (a previous handler may have left commands on it). False if not served."""
        if info.uio in self.devices:
            return True
        lu = self.logical_units.get(info.config)
        if lu is None:
            log.warning("%s (%s): config %r names no storage object of ours; not served",
                        info.uio, info.device_name, info.config)
            return False
        device = UioDevice(info, **self._roots)
        try:
            if recover:
                device.block()
                device.reset_ring()
            try:
                ring = device.open()
            finally:
                if recover:
                    device.unblock()
        except DeviceError as error:
            log.error("%s", error)
            device.close()
            return False
        self.serve(info, device, ring, lu)
        return True

    def serve(self, info: TcmuDeviceInfo, device: UioDevice, ring: CommandRing,
              lu: "LogicalUnit") -> ServedDevice:
        """Serve an opened device: its fd on the loop, its commands through ``lu``."""
        target = self._target_factory(info.device_name, lu)
        served = ServedDevice(info, device, CommandDriver(self._workers))
        served.processor = CommandProcessor(ring, target, lu_nexus(info.device_name), served.driver,
                                            notify_soon=lambda: self._notify_soon(served))
        self.devices[info.uio] = served
        self._loop.add_reader(device.fd, self._on_readable, served)
        log.info("serving %s as %s (%s, ring %d KiB, flags 0x%x)", info.config, info.uio,
                 info.device_name, ring.cmdr_size // 1024, ring.flags)
        self._on_readable(served)      # commands may already be waiting
        return served

    def detach(self, uio: str, *, answer: int | None = None) -> None:
        """Stop serving a device at once: no more commands are fetched, those in flight are
        aborted. ``answer`` is the status each gets once it has stopped (a clean stop: BUSY);
        None gives the ring up (removed, broken): nothing more is written to it. The device is
        closed when no storage work of its commands runs on a worker any more (see the module
        docstring)."""
        served = self.devices.pop(uio, None)
        if served is None:
            return
        if self._loop is not None and served.device.fd >= 0:
            self._loop.remove_reader(served.device.fd)
        served.closing = True
        self._closing.add(served)
        if answer is None:
            served.processor.give_up()
        else:
            served.processor.abort_all(answer)
        self._flush_completions(served)
        if served in self._closing:
            log.info("%s: closing once the storage work of %d commands has returned", uio,
                     served.processor.in_flight)

    def _close(self, served: ServedDevice) -> None:
        self._closing.discard(served)
        served.device.close()
        log.info("stopped serving %s (%s)", served.info.config, served.info.uio)

    def _on_readable(self, served: ServedDevice) -> None:
        device = served.device
        try:
            device.drain_event()
            if served.processor.process():
                device.notify()
        except RingError as error:
            log.error("%s: %s; giving the device up", served.info.uio, error)
            self.detach(served.info.uio)
        except OSError as error:     # EIO: the device was removed under us
            log.info("%s: %s", served.info.uio, error.strerror or error)
            self.detach(served.info.uio)

    def _notify_soon(self, served: ServedDevice) -> None:
        """A completion was written outside a batch (storage work returned): notify the kernel
        once for everything the workers delivered together, on the next loop iteration."""
        if not served.notify_scheduled:
            served.notify_scheduled = True
            self._loop.call_soon(self._flush_completions, served)

    def _flush_completions(self, served: ServedDevice) -> None:
        served.notify_scheduled = False
        processor = served.processor
        if processor.failure is not None and not served.closing:
            log.error("%s: %s; giving the device up", served.info.uio, processor.failure)
            self.detach(served.info.uio)
            return
        try:
            if processor.take_notification():
                served.device.notify()
        except OSError as error:     # EIO: the device was removed under us
            log.info("%s: %s", served.info.uio, error.strerror or error)
            processor.give_up()
            self.detach(served.info.uio)
        if served.closing and not processor.in_flight and served in self._closing:
            self._close(served)

    async def _stop_device(self, uio: str, grace: float) -> None:
        """Block, let running commands finish for up to ``grace`` seconds, answer the rest
        BUSY once their running storage work has returned, close, unblock."""
        served = self.devices.get(uio)
        if served is None:
            return
        try:
            served.device.block()
        except DeviceError as error:
            log.warning("%s", error)
            blocked = False
        else:
            blocked = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while served.processor.ring.outstanding and loop.time() < deadline:
            await asyncio.sleep(STOP_POLL_SECONDS)
        if served.processor.in_flight:
            log.info("%s: %d commands still running after %.1f s; answering them BUSY", uio,
                     served.processor.in_flight, grace)
        self.detach(uio, answer=_BUSY)
        deadline = loop.time() + STEP_WAIT_SECONDS
        while served in self._closing and loop.time() < deadline:
            await asyncio.sleep(STOP_POLL_SECONDS)
        if blocked:
            try:
                served.device.unblock()
            except DeviceError as error:
                log.warning("%s", error)
