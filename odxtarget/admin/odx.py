"""What the ``/odx`` node shows and changes, read from the daemon's copy manager.

The copy manager (``odxtarget.copy.CopyManager``) is found as ``daemon.copy_manager``; a daemon
without one answers every ``odx.*`` operation with a one-line "not available" error. This is
the only admin module that knows the manager's attributes (``limits``, ``tokens``, ``clock``,
``revoke_token``, ``all_counters``, ``detach``, ``storage_replacing``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from odxtarget.admin.protocol import AdminError
from odxtarget.config import ODX_SECTION, OdxConfig
from odxtarget.copy.limits import ADMIN_METADATA, CopyLimits

if TYPE_CHECKING:  # pragma: no cover
    from odxtarget.copy.manager import CopyManager
    from odxtarget.scsi.lu import LogicalUnit


class TunableLimit(NamedTuple):
    """A limit ``/odx set limits`` changes live."""

    field: str   # the CopyLimits field, which is also the config file's "odx" key
    type: type   # of its value: int or float
    help: str
    kind: str    # in the config file: "integer", "size" or "seconds"


def _tunable_limits() -> dict[str, TunableLimit]:
    """The CopyLimits fields that carry ``ADMIN_METADATA``, by their admin name. Each must be a
    key of the config's "odx" section, where saveconfig keeps it."""
    tunable: dict[str, TunableLimit] = {}
    for item in fields(CopyLimits):
        admin = item.metadata.get(ADMIN_METADATA)
        if admin is not None:
            key = ODX_SECTION.key(item.name)
            tunable[admin["name"]] = TunableLimit(item.name, key.value_type, admin["help"], key.kind)
    return tunable


#: The limits an administrator may change, by admin name.
TUNABLE_LIMITS: dict[str, TunableLimit] = _tunable_limits()


def token_id_text(token_id: int) -> str:
    """How tokens are named in the shell: the 8-byte identifier as 16 hex digits."""
    return f"{token_id:016x}"


class HoldsCopyManager(Protocol):
    """What the view needs of the daemon (``odxtarget.daemon.Daemon``)."""

    copy_manager: "CopyManager | None"


class OdxView:
    """Reads and changes the copy manager of one daemon."""

    def __init__(self, daemon: HoldsCopyManager):
        self.daemon = daemon

    @property
    def manager(self) -> "CopyManager | None":
        return self.daemon.copy_manager

    @property
    def available(self) -> bool:
        return self.manager is not None

    def _require(self) -> "CopyManager":
        manager = self.manager
        if manager is None:
            raise AdminError("ODX copy offload is not running in this daemon (no copy manager)")
        return manager

    # -- limits -----------------------------------------------------------------------------

    def limits(self) -> dict[str, Any]:
        limits = self._require().limits
        return {name: getattr(limits, limit.field) for name, limit in TUNABLE_LIMITS.items()}

    def config_values(self, changes: dict[str, Any]) -> dict[str, int | float]:
        """Admin names and values -> the config file's "odx" keys (CopyLimits field names).

        Raises:
            AdminError: no copy manager, an unknown name or a value that is not positive.
        """
        self._require()
        values: dict[str, int | float] = {}
        for name, value in changes.items():
            if name not in TUNABLE_LIMITS:
                raise AdminError(f"unknown ODX limit {name!r} (expected one of: {', '.join(TUNABLE_LIMITS)})")
            limit = TUNABLE_LIMITS[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise AdminError(f"{name}: must be a positive number, got {value!r}")
            values[limit.field] = limit.type(value)
        return values

    def limits_for(self, odx: OdxConfig) -> Any:
        """The copy manager's limits for a config's "odx" section, as the daemon builds them.

        Raises:
            AdminError: a combination the copy manager refuses.
        """
        try:
            return CopyLimits(**odx.limits_overrides())
        except ValueError as error:
            raise AdminError(f"odx: {error}") from None

    def use(self, limits: Any) -> None:
        """New limits apply to the next copy command; running ones keep theirs."""
        self._require().limits = limits

    # -- tokens -----------------------------------------------------------------------------

    def tokens(self) -> list[dict[str, Any]]:
        """Live tokens, oldest activity first."""
        manager = self._require()
        now = manager.clock()
        out = []
        for entry in sorted(manager.tokens.active(), key=lambda e: e.last_active):
            out.append({
                "id": token_id_text(entry.token_id),
                "creator": entry.creator.name,
                "ranges": [[lba, blocks] for lba, blocks in entry.ranges],
                "block_size": entry.block_size,
                "bytes": entry.bytes_represented,
                "kind": "snapshot" if entry.rod_file is not None else "live",
                "age": round(now - entry.created, 3),
                "idle": round(now - entry.last_active, 3),
                "expires_in": None if entry.in_use else round(
                    entry.last_active + entry.inactivity_timeout - now, 3),
                "in_use": entry.in_use,
            })
        return out

    def revoke(self, token: str) -> str:
        """Revoke one live token (its next use fails with 23h/06h); ``token`` is its hex id."""
        manager = self._require()
        text = token.strip().lower().removeprefix("0x")
        try:
            token_id = int(text, 16)
        except ValueError:
            raise AdminError(f"{token!r} is not a token id (16 hex digits, as `ls /odx/tokens` shows)") from None
        if not manager.revoke_token(token_id):
            raise AdminError(f"no live token {token_id_text(token_id)}")
        return token_id_text(token_id)

    # -- counters ---------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        """Per LU and in total: tokens created, copy commands, bytes offloaded by method."""
        per_lu = self._require().all_counters()
        total: dict[str, int] = {}
        for counters in per_lu.values():
            for method, count in counters.get("bytes", {}).items():
                total[method] = total.get(method, 0) + count
        return {"bytes_by_method": dict(sorted(total.items())), "logical_units": per_lu}

    # -- lifecycle hooks used by ``live`` ---------------------------------------------------------

    def logical_unit_attached(self, lu: "LogicalUnit") -> None:
        manager = self.manager
        if manager is not None:
            manager.attach(lu)

    def logical_unit_detached(self, lu: "LogicalUnit") -> None:
        manager = self.manager
        if manager is not None:
            manager.detach(lu)

    def storage_replacing(self, lu: "LogicalUnit") -> None:
        """Before ``lu``'s backend is swapped and the old one closed: copies on it stop using it."""
        manager = self.manager
        if manager is not None:
            manager.storage_replacing(lu)
