"""What the daemon and its admin interface ask of a front end: the native iSCSI server
(``odxtarget/transport/iscsi/server.py``) or the LIO front end (``transport/tcmu/frontend.py``).

Every front end starts, reports the portals it serves and shuts down. The native server also
changes its targets, portals and sessions while it runs (docs/admin.md, "Live changes"); behind
LIO, the kernel owns those, so the LIO front end is not a ``LiveFrontend``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from odxtarget.config import TargetConfig
    from odxtarget.scsi.types import TargetPort
    from odxtarget.transport.iscsi.session import SessionRegistry

#: An (ip, port) pair a front end listens on.
Portal = tuple[str, int]

#: How long a graceful shutdown lets running commands finish before connections are cut, in
#: seconds.
DEFAULT_SHUTDOWN_GRACE = 10.0


@runtime_checkable
class Frontend(Protocol):
    """Serves the daemon's logical units to initiators."""

    @property
    def addresses(self) -> list[Portal]:
        """The portals served, with the real port where the configuration said 0."""
        ...

    async def start(self) -> None: ...

    async def shutdown(self, grace: float = DEFAULT_SHUTDOWN_GRACE) -> None:
        """Stop serving; commands already running get ``grace`` seconds to finish."""
        ...


@runtime_checkable
class LiveFrontend(Frontend, Protocol):
    """A front end whose targets, portals and sessions change while it runs."""

    @property
    def registry(self) -> SessionRegistry:
        """The logged-in sessions, which the admin interface may end."""
        ...

    def set_target(self, config: TargetConfig, scsi_target: TargetPort) -> None: ...

    def remove_target(self, target_name: str) -> None: ...

    async def add_portal(self, ip: str, port: int, tpgt: int) -> None: ...

    def remove_portal(self, ip: str, port: int) -> None: ...

    def sessions(self) -> list[dict]:
        """One description per logged-in session (initiator, ISID, TSIH, target, peer)."""
        ...
