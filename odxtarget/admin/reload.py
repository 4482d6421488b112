"""SIGHUP: re-read the config file and apply it to the running daemon.

The file is loaded and validated like at start-up, then applied by the ``config.reload``
operation, the way ``restoreconfig`` applies a saved file (``AdminOperations._replace``): all
of it or, when it does not load or cannot be applied live, none of it, with one ERROR line
saying why; the daemon keeps serving the configuration it had. A changed ``log_level`` takes
effect. Live changes not yet saved are replaced by the file's content (a WARNING says so).

Reloads run one at a time on the event loop, under the operations' lock, so a reload never
interleaves with an admin change; a SIGHUP during a reload queues one more reload.
docs/deployment.md, "Reloading the configuration".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from odxtarget.admin.ops import AdminOperations
from odxtarget.admin.protocol import AdminError
from odxtarget.systemd import ServiceNotifier

log = logging.getLogger("odxtarget.admin")


class ConfigReloader:
    """Runs ``config.reload`` once per ``request`` (requests made during a reload coalesce)."""

    def __init__(self, operations: AdminOperations, notifier: ServiceNotifier,
                 status: Callable[[], str]) -> None:
        self.operations = operations
        self.notifier = notifier
        self.status = status
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self) -> None:
        """Reload soon (from a signal handler: never blocks, never raises)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="config-reload")

    async def _run(self) -> None:
        while True:
            self._again = False
            await self.reload()
            if not self._again:
                return

    async def reload(self) -> bool:
        """Reload the config file once; True when it was applied."""
        path = self.operations.config_path
        self.notifier.reloading()
        log.info("SIGHUP received: reloading %s", path)
        unsaved = self.operations.unsaved_changes
        try:
            await self.operations.dispatch("config.reload", {})
        except AdminError as error:
            log.error("configuration not reloaded, still serving the previous one: %s", error)
            return False
        except Exception:  # a bug in a live change must not take the daemon down
            log.exception("configuration not reloaded, still serving the previous one")
            return False
        finally:
            self.notifier.ready(self.status())
        if unsaved:
            log.warning("live changes that were not saved (saveconfig) were replaced by %s", path)
        log.info("configuration reloaded from %s", path)
        return True

    async def close(self) -> None:
        """Let a running reload finish (it holds the operations' lock) and drop queued ones."""
        self._again = False
        if self._task is not None:
            try:
                await self._task
            except Exception:  # already logged by reload
                pass
            self._task = None
