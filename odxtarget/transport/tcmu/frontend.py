"""The LIO front end as the daemon starts it: TCMU handler plus LIO configuration.

Start order: the handler first (it recovers rings left by a previous run and follows uevents),
then the LIO objects are reconciled in a worker thread (configfs writes block; the loop keeps
serving rings meanwhile), then a rescan attaches devices whose uevent raced the start.
Stop: the handler stops (block, drain, answer the rest BUSY, close, unblock); LIO objects stay
unless ``remove_on_stop``, so a restarted daemon resumes I/O for logged-in initiators.
Storage work runs on ``workers`` when the daemon shares its pool, else on the handler's own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from odxtarget.config import DaemonConfig
from odxtarget.transport.tcmu.handler import TcmuHandler
from odxtarget.transport.tcmu.lio_config import LioConfigurator
from odxtarget.transport.workers import StorageWorkers

log = logging.getLogger(__name__)


class LioFrontend:
    """``start()`` / ``shutdown(grace)`` / ``addresses``, like the native server."""

    def __init__(self, config: DaemonConfig, logical_units: Mapping[str, Any], *,
                 manage_lio: bool = True, remove_on_stop: bool = False,
                 handler: TcmuHandler | None = None, workers: StorageWorkers | None = None):
        self.config = config
        self.handler = handler or TcmuHandler(logical_units, workers=workers)
        self.configurator = LioConfigurator(config) if manage_lio else None
        self.remove_on_stop = remove_on_stop

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return list(dict.fromkeys((p.ip, p.port) for t in self.config.targets for p in t.portals))

    async def start(self) -> None:
        await self.handler.start()
        if self.configurator is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.configurator.apply)
            except BaseException:
                await self.handler.stop(grace=0)
                raise
        self.handler.rescan()
        missing = {so.name for so in self.config.storage_objects} - {
            d.info.config for d in self.handler.devices.values()}
        if missing:
            log.warning("no TCMU device found yet for: %s", ", ".join(sorted(missing)))

    async def shutdown(self, grace: float = 10.0) -> None:
        await self.handler.stop(grace)
        if self.configurator is not None and self.remove_on_stop:
            await asyncio.get_running_loop().run_in_executor(None, self.configurator.remove)
