"""What the ``/odx`` node shows and changes, read from the daemon's copy manager.

The copy manager (``odxtarget.copy.CopyManager``) is found as ``daemon.copy_manager``; a daemon
without one answers every ``odx.*`` operation with a one-line "not available" error. This is
the only admin module that knows the manager's attributes (``limits``, ``tokens``, ``clock``,
``revoke_token``, ``all_counters``, ``detach``).
"""

from __future__ import annotations

from typing import Any

from odxtarget.admin.protocol import AdminError
from odxtarget.config import OdxConfig

#: The limits an administrator may change: admin name -> (CopyLimits field, which is also the
#: config file's "odx" key; type; help).
TUNABLE_LIMITS: dict[str, tuple[str, type, str]] = {
    "default_inactivity_timeout": (
        "default_inactivity_timeout", int,
        "seconds a token lives unused when POPULATE TOKEN asks for the default (SPC-4 5.16.6.3)",
    ),
    "max_inactivity_timeout": (
        "max_inactivity_timeout", int, "largest INACTIVITY TIMEOUT a POPULATE TOKEN may ask for",
    ),
    "max_token_transfer_size": (
        "max_token_transfer_bytes", int, "MAXIMUM TOKEN TRANSFER SIZE, in bytes (VPD 8Fh)",
    ),
    "optimal_transfer_size": (
        "optimal_transfer_bytes", int, "OPTIMAL TRANSFER COUNT, in bytes (VPD 8Fh)",
    ),
    "time_budget": (
        "write_using_token_budget", float,
        "seconds one WRITE USING TOKEN may run before it stops with a residual",
    ),
}


def token_id_text(token_id: int) -> str:
    """How tokens are named in the shell: the 8-byte identifier as 16 hex digits."""
    return f"{token_id:016x}"


class OdxView:
    """Reads and changes the copy manager of one daemon."""

    def __init__(self, daemon: Any):
        self.daemon = daemon

    @property
    def manager(self) -> Any:
        return getattr(self.daemon, "copy_manager", None)

    @property
    def available(self) -> bool:
        return self.manager is not None

    def _require(self) -> Any:
        manager = self.manager
        if manager is None:
            raise AdminError("ODX copy offload is not running in this daemon (no copy manager)")
        return manager

    # -- limits -----------------------------------------------------------------------------

    def limits(self) -> dict[str, Any]:
        limits = self._require().limits
        return {name: getattr(limits, field) for name, (field, _, _) in TUNABLE_LIMITS.items()}

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
            field, kind, _ = TUNABLE_LIMITS[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise AdminError(f"{name}: must be a positive number, got {value!r}")
            values[field] = kind(value)
        return values

    def limits_for(self, odx: OdxConfig) -> Any:
        """The copy manager's limits for a config's "odx" section, as the daemon builds them.

        Raises:
            AdminError: a combination the copy manager refuses.
        """
        from odxtarget.copy import CopyLimits

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
            created = getattr(entry, "created", None)
            out.append({
                "id": token_id_text(entry.token_id),
                "creator": getattr(entry.creator, "name", "?"),
                "ranges": [[lba, blocks] for lba, blocks in entry.ranges],
                "block_size": entry.block_size,
                "bytes": entry.bytes_represented,
                "kind": "snapshot" if entry.rod_file is not None else "live",
                "age": round(now - created, 3) if created is not None else None,
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

    def logical_unit_attached(self, lu: Any) -> None:
        manager = self.manager
        if manager is not None:
            manager.attach(lu)

    def logical_unit_detached(self, lu: Any) -> None:
        manager = self.manager
        if manager is not None:
            manager.detach(lu)
