"""The typed operations under every shell command and every control-socket request.

Theory of operation
-------------------
An operation is an ``async`` method of ``AdminOperations`` registered under a protocol name
(``"extent.create"``) with ``@operation``. Its signature *is* its contract: ``dispatch``
checks the request's argument names against it (an unknown one is refused with the list of
known ones) and converts each value to the annotated type, so the shell can send the strings
the user typed (``size=1G``, ``read_only=yes``) and a script can send JSON numbers and booleans.

A change never edits the running model in place: it edits a fresh ``dump_config`` document,
validates it with ``parse_config`` (the validator ``load_config`` uses, so a change that would
make the saved file unloadable is refused with the same message, nothing changed), lets
``LiveState.apply`` make the running objects match (or refuse), and only then replaces
``daemon.config``. Operations are serialized by one lock.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import inspect
import ipaddress
import logging
import os
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, NewType

from odxtarget import __version__
from odxtarget.admin import saving
from odxtarget.admin.live import LiveState
from odxtarget.admin.odx import TUNABLE_LIMITS, OdxView
from odxtarget.admin.protocol import AdminError
from odxtarget.config import (
    BLOCK_SIZES,
    ConfigError,
    DaemonConfig,
    dump_config,
    iscsi_name_problem,
    load_config,
    parse_config,
    parse_size,
)
from odxtarget.logging_setup import LEVELS, current_level, set_level
from odxtarget.transport.iscsi.lun_masking import lun_map_of

log = logging.getLogger("odxtarget.admin")

#: A byte count: an integer, or a string with a binary K/M/G/T suffix ("64M").
Size = NewType("Size", int)

TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})
DEFAULT_PORTAL_IP = "127.0.0.1"
DEFAULT_PORTAL_PORT = 3260


@dataclass(frozen=True, slots=True)
class OperationSpec:
    name: str
    method: Callable[..., Any]
    summary: str
    #: True for operations that only look: the control socket logs every other one, with
    #: who asked (docs/deployment.md, "Who changed what").
    reads_only: bool = False


OPERATIONS: dict[str, OperationSpec] = {}


def operation(name: str, *, reads_only: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an ``AdminOperations`` method as the protocol operation ``name``."""

    def register(method: Callable[..., Any]) -> Callable[..., Any]:
        summary = (inspect.getdoc(method) or "").split("\n", 1)[0]
        OPERATIONS[name] = OperationSpec(name, method, summary, reads_only)
        return method

    return register


def limit_parameters(method: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``method`` (which takes ``**limits``) one optional keyword parameter per entry of
    ``TUNABLE_LIMITS``, typed by its kind (sizes accept K/M/G suffixes), so that its signature
    is its contract like every other operation's."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for name, limit in TUNABLE_LIMITS.items():
        hint = (Size if limit.kind == "size" else limit.type) | None
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=hint))
    method.__signature__ = inspect.Signature(parameters, return_annotation=dict[str, Any])
    method.__annotations__ = {p.name: p.annotation for p in parameters[1:]} | {"return": dict[str, Any]}
    return method


# -- argument conversion --------------------------------------------------------------------


def _coerce(op: str, parameter: str, value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` (str, int, float, bool, Size, or one of them | None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        choices = [h for h in typing.get_args(hint) if h is not type(None)]
        if value is None:
            return None
        hint = choices[0]
    where = f"{op}: {parameter}"
    if hint is Size:
        try:
            return parse_size(value)
        except ValueError as error:
            raise AdminError(f"{where}: {error}") from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise AdminError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        raise AdminError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise AdminError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, str):
            return value
        raise AdminError(f"{where}: expected a string, got {value!r}")
    raise AdminError(f"{where}: unsupported parameter type")  # pragma: no cover - a coding error


def bind_arguments(spec: OperationSpec, args: dict[str, Any]) -> dict[str, Any]:
    """Check names against the method's signature and convert values to its annotations."""
    signature = inspect.signature(spec.method)
    hints = typing.get_type_hints(spec.method, globalns={**globals(), "Size": Size})
    parameters = [p for p in signature.parameters.values() if p.name != "self"]
    known = [p.name for p in parameters]
    for name in args:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            expected = f"did you mean {close[0]!r}?" if close else (
                "expected one of: " + ", ".join(known) if known else "it takes no parameters")
            raise AdminError(f"{spec.name}: unknown parameter {name!r} ({expected})")
    bound = {}
    for parameter in parameters:
        if parameter.name in args:
            bound[parameter.name] = _coerce(spec.name, parameter.name, args[parameter.name],
                                            hints[parameter.name])
        elif parameter.default is inspect.Parameter.empty:
            raise AdminError(f"{spec.name}: missing parameter {parameter.name!r}")
    return bound


# -- messages -------------------------------------------------------------------------------


def shell_problem(problem: str, document: dict[str, Any]) -> str:
    """Rewrite a validator problem's JSON path into the shell's tree path where possible:
    ``targets[0].acls[1].chap.password: ...`` -> ``/iscsi/<iqn>/tpg1/acls/<initiator>: auth password: ...``."""
    match = re.match(r"(targets|storage_objects)\[(\d+)\](?:\.(luns|acls|portals)\[(\d+)\])?\.?(\S*?):\s(.*)", problem)
    if match is None:
        return problem
    kind, index, child, child_index, rest, message = match.groups()
    try:
        item = document[kind][int(index)]
        if kind == "storage_objects":
            path = f"/backstores/{'block' if item.get('block') else 'extents'}/{item['name']}"
        else:
            path = f"/iscsi/{item['iqn']}/tpg{item.get('tpgt', 1)}"
            if child is not None:
                entry = item[child][int(child_index)]
                name = {"luns": lambda e: f"lun{e['lun']}", "acls": lambda e: e["initiator"],
                        "portals": lambda e: f"{e['ip']}:{e['port']}"}[child](entry)
                path += f"/{child}/{name}"
    except (KeyError, IndexError, TypeError, ValueError):
        return problem
    rest = rest.replace("chap.", "auth ")
    return f"{path}: {rest}: {message}" if rest else f"{path}: {message}"


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# -- the operations ---------------------------------------------------------------------------


class AdminOperations:
    """Every admin operation on one running ``Daemon``.

    Args:
        daemon: the running daemon (``config``, ``backends``, ``logical_units``, ``targets``,
            ``server``, optionally ``copy_manager``).
        config_path: the file the daemon was started from; ``saveconfig`` writes it.
    """

    def __init__(self, daemon: Any, config_path: str | None):
        import asyncio

        self.daemon = daemon
        self.config_path = os.path.abspath(config_path) if config_path else None
        self.odx_view = OdxView(daemon)
        self.live = LiveState(daemon, self.odx_view)
        self.unsaved_changes = False
        self._lock = asyncio.Lock()
        self._known_warnings: set[str] = set()

    @property
    def config(self) -> DaemonConfig:
        return self.daemon.config

    async def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        """Run one request.

        Raises:
            AdminError: unknown operation or parameter, a bad value, or a refused change.
        """
        spec = OPERATIONS.get(op)
        if spec is None:
            close = difflib.get_close_matches(op, OPERATIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise AdminError(f"unknown operation {op!r}{hint}")
        bound = bind_arguments(spec, args)
        async with self._lock:
            return await spec.method(self, **bound)

    # -- the change pipeline -------------------------------------------------------------------

    def _validate(self, document: dict[str, Any]) -> tuple[DaemonConfig, list[str]]:
        collector = _WarningCollector()
        config_log = logging.getLogger("odxtarget.config")
        config_log.addHandler(collector)
        propagate, config_log.propagate = config_log.propagate, False
        try:
            config = parse_config(document, self.config_path or "<admin>", base_dir=self.config.state_dir)
        except ConfigError as error:
            raise AdminError("; ".join(shell_problem(p, document) for p in error.problems)) from None
        finally:
            config_log.removeHandler(collector)
            config_log.propagate = propagate
        warnings = [m.split(": ", 1)[1] if ": " in m else m for m in collector.messages]
        new = [w for w in warnings if w not in self._known_warnings]
        self._known_warnings = set(warnings)
        return config, [shell_problem(w, document) for w in new]

    async def _change(self, edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Edit a copy of the configuration, validate it, apply it live, then adopt it."""
        document = dump_config(self.config)
        outcome = edit(document)
        new, warnings = self._validate(document)
        await self.live.apply(self.config, new)
        self._adopt(new)
        self.unsaved_changes = True
        result: dict[str, Any] = {"warnings": warnings}
        if isinstance(outcome, dict):
            result.update(outcome)
        return result

    async def _replace(self, new: DaemonConfig) -> None:
        """Swap the whole configuration (restore/clear): through an empty one when needed."""
        old = self.config
        try:
            await self.live.apply(old, new)
        except AdminError:
            empty = _without_objects(old)
            await self.live.apply(old, empty)
            try:
                await self.live.apply(empty, new)
            except AdminError:
                await self.live.apply(empty, old)
                raise
        self._adopt(new)

    def _adopt(self, new: DaemonConfig) -> None:
        """Make ``new`` the running configuration; a changed ``log_level`` takes effect."""
        old, self.daemon.config = self.config, new
        if new.log_level != old.log_level:
            set_level(new.log_level)
            log.info("log level is %s", new.log_level)

    # -- helpers over the document ---------------------------------------------------------------

    @staticmethod
    def _target(document: dict[str, Any], iqn: str) -> dict[str, Any]:
        for target in document["targets"]:
            if target["iqn"] == iqn:
                return target
        raise AdminError(f"no target {iqn} (see `ls /iscsi`)")

    @staticmethod
    def _storage(document: dict[str, Any], name: str) -> dict[str, Any]:
        for so in document["storage_objects"]:
            if so["name"] == name:
                return so
        raise AdminError(f'no storage object "{name}" (see `ls /backstores/extents`)')

    @staticmethod
    def _mappings(document: dict[str, Any], name: str) -> list[str]:
        return [f"LUN {m['lun']} of {t['iqn']}" for t in document["targets"] for m in t["luns"]
                if m["storage_object"] == name]

    def _storage_states(self) -> dict[str, dict[str, Any]]:
        """Each running storage object's write-back state (docs/errors.md)."""
        states = {}
        for name, lu in self.daemon.logical_units.items():
            failure = lu.write_back_failure
            states[name] = {
                "write_back_failed": failure is not None,
                "write_back_error": failure.error if failure is not None else None,
                "write_back_failed_at": _timestamp(failure.since) if failure is not None else None,
            }
        return states

    # -- overview ------------------------------------------------------------------------------

    @operation("status", reads_only=True)
    async def status(self) -> dict[str, Any]:
        """Version, config file, listening portals, unsaved changes, ODX availability."""
        return {
            "version": __version__,
            "pid": os.getpid(),
            "config_path": self.config_path,
            "listening": [f"{ip}:{port}" for ip, port in self.live.listening()],
            "unsaved_changes": self.unsaved_changes,
            "odx": self.odx_view.available,
            "write_back_failed": sorted(name for name, state in self._storage_states().items()
                                        if state["write_back_failed"]),
        }

    @operation("config.get", reads_only=True)
    async def config_get(self) -> dict[str, Any]:
        """The running configuration, in the config file's JSON shape."""
        return dump_config(self.config)

    @operation("tree", reads_only=True)
    async def tree(self) -> dict[str, Any]:
        """Everything the shell's tree shows, in one round trip."""
        return {
            "config": dump_config(self.config),
            "sessions": await self.sessions(),
            "odx": self.odx_view.available,
            "tokens": self.odx_view.tokens() if self.odx_view.available else [],
            "unsaved_changes": self.unsaved_changes,
            "storage": self._storage_states(),
        }

    # -- backstores ------------------------------------------------------------------------------

    @operation("extent.create")
    async def extent_create(self, name: str, size: Size, path: str | None = None,
                            block_size: int = 512, read_only: bool = False) -> dict[str, Any]:
        """Create a storage object backed by one sparse file (default <state_dir>/<name>.img)."""
        if block_size not in BLOCK_SIZES:
            raise AdminError(f"block_size must be 512 or 4096, got {block_size}")

        def edit(document: dict[str, Any]) -> dict[str, Any]:
            if any(so["name"] == name for so in document["storage_objects"]):
                raise AdminError(f'storage object "{name}" already exists')
            file_path = os.path.join(self.config.state_dir, f"{name}.img") if path is None else path
            file_path = os.path.normpath(os.path.join(self.config.state_dir, os.path.expanduser(file_path)))
            document["storage_objects"].append({
                "name": name, "size": size, "block_size": block_size, "read_only": read_only,
                "extents": [{"path": file_path, "offset": 0, "length": None}],
            })
            return {"name": name, "path": file_path, "size": size}

        return await self._change(edit)

    @operation("block.create")
    async def block_create(self, name: str, dev: str, size: Size | None = None, block_size: int = 512,
                           read_only: bool = False) -> dict[str, Any]:
        """Create a storage object on a block device (docs/block.md): the whole device unless
        ``size`` is given (targetcli's ``/backstores/block create``)."""
        if block_size not in BLOCK_SIZES:
            raise AdminError(f"block_size must be 512 or 4096, got {block_size}")

        def edit(document: dict[str, Any]) -> None:
            if any(so["name"] == name for so in document["storage_objects"]):
                raise AdminError(f'storage object "{name}" already exists')
            document["storage_objects"].append({
                "name": name, **({"size": size} if size is not None else {}), "block_size": block_size,
                "read_only": read_only, "block": {"path": dev},
            })

        result = await self._change(edit)
        created = next(so for so in self.config.storage_objects if so.name == name)
        return {**result, "name": name, "path": created.block.path, "size": created.size}

    @operation("extent.delete")
    async def extent_delete(self, name: str) -> dict[str, Any]:
        """Delete a storage object (refused while a LUN maps it); its file is kept."""

        def edit(document: dict[str, Any]) -> None:
            so = self._storage(document, name)
            mapped = self._mappings(document, name)
            if mapped:
                raise AdminError(f'storage object "{name}" is mapped as {", ".join(mapped)}; delete the LUN first')
            document["storage_objects"].remove(so)

        return await self._change(edit)

    @operation("extent.resize")
    async def extent_resize(self, name: str, size: Size) -> dict[str, Any]:
        """Change a storage object's size; growing is live (CAPACITY DATA HAS CHANGED), shrinking
        only while unmapped."""

        def edit(document: dict[str, Any]) -> dict[str, Any]:
            so = self._storage(document, name)
            old_size = parse_size(so["size"])
            mapped = self._mappings(document, name)
            if size < old_size and mapped:
                raise AdminError(
                    f'shrinking "{name}" would cut off data initiators can see ({", ".join(mapped)});'
                    " delete the LUN first")
            so["size"] = size
            return {"name": name, "old_size": old_size, "size": size}

        return await self._change(edit)

    @operation("extent.reopen")
    async def extent_reopen(self, name: str, confirm: bool = False) -> dict[str, Any]:
        """Reopen a storage object's files and clear its write-back failed state, after which
        SYNCHRONIZE CACHE and FUA writes work again. Needs confirm=true while the state is set:
        data written before the failure may be lost (docs/errors.md)."""
        so = next((so for so in self.config.storage_objects if so.name == name), None)
        if so is None:
            raise AdminError(f'no storage object "{name}" (see `ls /backstores/extents`)')
        lu = self.daemon.logical_units.get(name)
        failure = lu.write_back_failure if lu is not None else None
        if failure is not None and not confirm:
            raise AdminError(
                f'storage object "{name}": write-back failed at {_timestamp(failure.since)} ({failure.error});'
                " data written before then may be lost. Check the storage, then repeat with confirm=true"
                " to reopen its files and accept flushes again")
        cleared = self.live.reopen_storage(so)
        return {"name": name, "cleared": cleared is not None,
                "failed_at": _timestamp(cleared.since) if cleared is not None else None}

    @operation("extent.set")
    async def extent_set(self, name: str, read_only: bool | None = None) -> dict[str, Any]:
        """Change a storage object's attributes (read_only applies to the next command)."""

        def edit(document: dict[str, Any]) -> None:
            so = self._storage(document, name)
            if read_only is not None:
                so["read_only"] = read_only

        return await self._change(edit)

    # -- targets ---------------------------------------------------------------------------------

    @operation("target.create")
    async def target_create(self, iqn: str) -> dict[str, Any]:
        """Create a target with TPG 1 and one portal (where the daemon already listens, else
        127.0.0.1:3260); no LUNs, no ACLs, demo mode off."""
        problem = iscsi_name_problem(iqn)
        if problem is not None:
            raise AdminError(f'"{iqn}" {problem}')
        listening = self.live.listening()
        ip, port = listening[0] if listening else (DEFAULT_PORTAL_IP, DEFAULT_PORTAL_PORT)

        def edit(document: dict[str, Any]) -> dict[str, Any]:
            if any(t["iqn"] == iqn for t in document["targets"]):
                raise AdminError(f"target {iqn} already exists")
            document["targets"].append({
                "iqn": iqn, "tpgt": 1, "portals": [{"ip": ip, "port": port}], "luns": [], "acls": [],
                "demo_mode": False, "chap": None,
            })
            return {"iqn": iqn, "tpg": "tpg1", "portal": f"{ip}:{port}"}

        return await self._change(edit)

    @operation("target.delete")
    async def target_delete(self, iqn: str) -> dict[str, Any]:
        """Delete a target; its sessions are dropped."""
        return await self._change(lambda document: document["targets"].remove(self._target(document, iqn)))

    @operation("tpg.set")
    async def tpg_set(self, iqn: str, demo_mode: bool | None = None,
                      demo_mode_write_protect: bool | None = None) -> dict[str, Any]:
        """Change TPG attributes; demo_mode=true lets any initiator log in (ACLs not needed),
        demo_mode=false ends the sessions of initiators no ACL names; demo_mode_write_protect
        makes every LUN read-only to those sessions from their next command."""

        def edit(document: dict[str, Any]) -> None:
            target = self._target(document, iqn)
            if demo_mode is not None:
                target["demo_mode"] = demo_mode
            if demo_mode_write_protect is not None:
                target["demo_mode_write_protect"] = demo_mode_write_protect

        return await self._change(edit)

    @staticmethod
    def _edit_chap(current: dict[str, Any] | None, userid: str | None, password: str | None,
                   mutual_userid: str | None, mutual_password: str | None) -> dict[str, Any] | None:
        """Merge the given credentials (an empty string clears one) into ``current``."""
        chap = dict(current or {})
        for key, value in (("userid", userid), ("password", password),
                           ("mutual_userid", mutual_userid), ("mutual_password", mutual_password)):
            if value is None:
                continue
            if value == "":
                chap.pop(key, None)
            else:
                chap[key] = value
        chap = {k: v for k, v in chap.items() if v is not None}
        return chap or None

    @operation("tpg.set_auth")
    async def tpg_set_auth(self, iqn: str, userid: str | None = None, password: str | None = None,
                           mutual_userid: str | None = None, mutual_password: str | None = None) -> dict[str, Any]:
        """Set the CHAP credentials every initiator must use (unless its ACL has its own);
        an empty value clears one. Sessions that authenticated with the old ones end."""

        def edit(document: dict[str, Any]) -> None:
            target = self._target(document, iqn)
            target["chap"] = self._edit_chap(target["chap"], userid, password, mutual_userid, mutual_password)

        return await self._change(edit)

    # -- LUNs --------------------------------------------------------------------------------------

    @operation("lun.create")
    async def lun_create(self, iqn: str, storage_object: str, lun: int | None = None) -> dict[str, Any]:
        """Map a storage object as a LUN (the lowest free number unless given); live for every
        session, which sees REPORTED LUNS DATA HAS CHANGED."""
        name = storage_object.rstrip("/").rsplit("/", 1)[-1]

        def edit(document: dict[str, Any]) -> dict[str, Any]:
            target = self._target(document, iqn)
            self._storage(document, name)
            used = {m["lun"] for m in target["luns"]}
            number = lun
            if number is None:
                number = next(n for n in range(len(used) + 1) if n not in used)
            elif number in used:
                raise AdminError(f"LUN {number} already exists in {iqn}")
            target["luns"].append({"lun": number, "storage_object": name})
            return {"lun": number, "storage_object": name}

        return await self._change(edit)

    @operation("lun.delete")
    async def lun_delete(self, iqn: str, lun: int) -> dict[str, Any]:
        """Unmap a LUN; commands to it then fail with LOGICAL UNIT NOT SUPPORTED."""

        def edit(document: dict[str, Any]) -> None:
            target = self._target(document, iqn)
            mapping = next((m for m in target["luns"] if m["lun"] == lun), None)
            if mapping is None:
                raise AdminError(f"no LUN {lun} in {iqn}")
            users = [f"{a['initiator']} (mapped LUN {m['mapped_lun']})" for a in target["acls"]
                     for m in a.get("mapped_luns") or [] if m["lun"] == lun]
            if users:
                raise AdminError(f"LUN {lun} of {iqn} is shown to {', '.join(users)}; delete those mapped LUNs first")
            target["luns"].remove(mapping)

        return await self._change(edit)

    # -- ACLs --------------------------------------------------------------------------------------

    @staticmethod
    def _acl(target: dict[str, Any], initiator: str) -> dict[str, Any]:
        for acl in target["acls"]:
            if acl["initiator"] == initiator:
                return acl
        raise AdminError(f"no ACL for {initiator} in {target['iqn']}")

    @operation("acl.create")
    async def acl_create(self, iqn: str, initiator: str) -> dict[str, Any]:
        """Allow an initiator to log in (it sees every LUN of the target)."""

        def edit(document: dict[str, Any]) -> None:
            target = self._target(document, iqn)
            if any(a["initiator"] == initiator for a in target["acls"]):
                raise AdminError(f"an ACL for {initiator} already exists in {iqn}")
            target["acls"].append({"initiator": initiator, "chap": None})

        return await self._change(edit)

    @operation("acl.delete")
    async def acl_delete(self, iqn: str, initiator: str) -> dict[str, Any]:
        """Remove an ACL; that initiator's sessions are dropped (unless demo mode admits it)."""

        def edit(document: dict[str, Any]) -> None:
            target = self._target(document, iqn)
            target["acls"].remove(self._acl(target, initiator))

        return await self._change(edit)

    @operation("acl.set_auth")
    async def acl_set_auth(self, iqn: str, initiator: str, userid: str | None = None, password: str | None = None,
                           mutual_userid: str | None = None, mutual_password: str | None = None) -> dict[str, Any]:
        """Set this initiator's own CHAP credentials (mutual CHAP with the mutual_ pair); an
        empty value clears one. Its sessions end; its next login uses them."""

        def edit(document: dict[str, Any]) -> None:
            acl = self._acl(self._target(document, iqn), initiator)
            acl["chap"] = self._edit_chap(acl["chap"], userid, password, mutual_userid, mutual_password)

        return await self._change(edit)

    @operation("mapped_lun.create")
    async def mapped_lun_create(self, iqn: str, initiator: str, mapped_lun: int, lun: int,
                                write_protect: bool = False) -> dict[str, Any]:
        """Show the target's LUN ``lun`` to this initiator as LUN ``mapped_lun`` (LUN masking:
        once an ACL has mapped LUNs, its initiator sees only those). Its sessions end; its
        next login sees the new map."""

        def edit(document: dict[str, Any]) -> dict[str, Any]:
            target = self._target(document, iqn)
            acl = self._acl(target, initiator)
            if all(m["lun"] != lun for m in target["luns"]):
                raise AdminError(f"no LUN {lun} in {iqn} (see `ls /iscsi/{iqn}/tpg{target['tpgt']}/luns`)")
            mapped = acl.setdefault("mapped_luns", [])
            if any(m["mapped_lun"] == mapped_lun for m in mapped):
                raise AdminError(f"mapped LUN {mapped_lun} already exists in the ACL for {initiator}")
            mapped.append({"mapped_lun": mapped_lun, "lun": lun, "write_protect": write_protect})
            return {"mapped_lun": mapped_lun, "lun": lun, "write_protect": write_protect}

        return await self._change(edit)

    @operation("mapped_lun.delete")
    async def mapped_lun_delete(self, iqn: str, initiator: str, mapped_lun: int) -> dict[str, Any]:
        """Stop showing mapped LUN ``mapped_lun`` to this initiator. Its sessions end; an ACL
        left with no mapped LUNs sees none (delete and create the ACL to show every LUN)."""

        def edit(document: dict[str, Any]) -> None:
            acl = self._acl(self._target(document, iqn), initiator)
            mapped = acl.get("mapped_luns") or []
            entry = next((m for m in mapped if m["mapped_lun"] == mapped_lun), None)
            if entry is None:
                raise AdminError(f"no mapped LUN {mapped_lun} in the ACL for {initiator}")
            mapped.remove(entry)

        return await self._change(edit)

    # -- portals -----------------------------------------------------------------------------------

    @operation("portal.create")
    async def portal_create(self, iqn: str, ip: str = DEFAULT_PORTAL_IP,
                            port: int = DEFAULT_PORTAL_PORT) -> dict[str, Any]:
        """Listen for the target on ip:port too (bound at once)."""

        def edit(document: dict[str, Any]) -> dict[str, Any]:
            target = self._target(document, iqn)
            target["portals"].append({"ip": ip, "port": port})
            return {"portal": f"{ip}:{port}"}

        return await self._change(edit)

    @operation("portal.delete")
    async def portal_delete(self, iqn: str, ip: str, port: int) -> dict[str, Any]:
        """Stop offering the target on ip:port (running sessions stay)."""

        def edit(document: dict[str, Any]) -> None:
            target = self._target(document, iqn)
            try:
                normal = str(ipaddress.ip_address(ip))
            except ValueError:
                raise AdminError(f'"{ip}" is not an IPv4 or IPv6 address') from None
            portal = next((p for p in target["portals"] if p["ip"] == normal and p["port"] == port), None)
            if portal is None:
                raise AdminError(f"no portal {ip}:{port} in {iqn}")
            target["portals"].remove(portal)

        return await self._change(edit)

    # -- sessions ----------------------------------------------------------------------------------

    @operation("sessions.list", reads_only=True)
    async def sessions(self) -> list[dict[str, Any]]:
        """Logged-in sessions: initiator, target, peer, digests and the LUNs they see."""
        out = []
        for described in self.live.sessions():
            session = dict(described)
            if session.get("session_type") == "Discovery":
                continue
            scsi_target = self.live.scsi_target(session.get("target") or "")
            session["luns"] = self._session_luns(session, scsi_target)
            out.append(session)
        return sorted(out, key=lambda s: (s.get("target") or "", s.get("tsih") or 0))

    def _session_luns(self, session: dict[str, Any], scsi_target: Any) -> list[int]:
        """The LUN numbers a session sees: its ACL's mapped LUNs, else the target's."""
        if scsi_target is None:
            return []
        config = next((t for t in self.config.targets if t.iqn == session.get("target")), None)
        mask = lun_map_of(config, session.get("initiator") or "") if config is not None else None
        return sorted(mask) if mask is not None else scsi_target.lun_numbers()

    # -- ODX ---------------------------------------------------------------------------------------

    @operation("odx.limits", reads_only=True)
    async def odx_limits(self) -> dict[str, Any]:
        """The copy manager's tunable limits."""
        return self.odx_view.limits()

    @operation("odx.set_limits")
    @limit_parameters
    async def odx_set_limits(self, **limits: Any) -> dict[str, Any]:
        """Change copy limits: they apply to the next copy command, and saveconfig keeps them
        (the config file's "odx" section)."""
        changes = {name: value for name, value in limits.items() if value is not None}
        if not changes:
            raise AdminError("odx.set_limits: give at least one limit to change")
        values = self.odx_view.config_values(changes)
        await self._change(lambda document: document.setdefault("odx", {}).update(values))
        return self.odx_view.limits()

    @operation("odx.tokens", reads_only=True)
    async def odx_tokens(self) -> list[dict[str, Any]]:
        """Live ROD tokens: id, creator LU, ranges, bytes, age, expiry."""
        return self.odx_view.tokens()

    @operation("odx.revoke")
    async def odx_revoke(self, token: str) -> dict[str, Any]:
        """Revoke a token: its next use fails with INVALID TOKEN OPERATION, TOKEN REVOKED (23h/06h)."""
        return {"revoked": self.odx_view.revoke(token)}

    @operation("odx.counters", reads_only=True)
    async def odx_counters(self) -> dict[str, Any]:
        """Bytes offloaded by method, per LU and in total."""
        return self.odx_view.counters()

    # -- saving ------------------------------------------------------------------------------------

    def _require_path(self) -> str:
        if self.config_path is None:
            raise AdminError("this daemon was started without a config file; nothing to save to")
        return self.config_path

    @operation("config.save")
    async def config_save(self) -> dict[str, Any]:
        """Write the running configuration to the daemon's config file (backup kept)."""
        result = saving.save(self.config, self._require_path())
        self.unsaved_changes = False
        return result

    @operation("config.backups", reads_only=True)
    async def config_backups(self) -> list[str]:
        """Saved backups of the config file, oldest first."""
        return saving.list_backups(self._require_path())

    @operation("config.restore")
    async def config_restore(self, path: str | None = None, confirm: bool = False) -> dict[str, Any]:
        """Replace the running configuration with a saved file (default: the config file)."""
        source = os.path.abspath(path) if path else self._require_path()
        if not confirm:
            raise AdminError(f"restoreconfig replaces the running configuration with {source};"
                             " repeat with confirm=true")
        try:
            new = load_config(source)
        except ConfigError as error:
            raise AdminError("; ".join(f"{source}: {p}" for p in error.problems)) from None
        await self._replace(new)
        self.unsaved_changes = source != self.config_path
        return {"path": source}

    @operation("config.reload")
    async def config_reload(self) -> dict[str, Any]:
        """Re-read the daemon's config file and apply it, as SIGHUP does (a file that does not
        load, or a change that cannot be applied live, is refused and nothing changes)."""
        return await self.config_restore(confirm=True)

    # -- logging -----------------------------------------------------------------------------------

    @operation("log.level", reads_only=True)
    async def log_level(self) -> dict[str, Any]:
        """The daemon's log level."""
        return {"level": current_level()}

    @operation("log.set_level")
    async def log_set_level(self, level: str) -> dict[str, Any]:
        """Change the daemon's log level live (debug, info, warning, error, critical);
        saveconfig keeps it (the config file's "log_level")."""
        name = level.strip().lower()
        if name not in LEVELS:
            raise AdminError(f"log.set_level: unknown level {level!r} (expected one of: {', '.join(LEVELS)})")
        await self._change(lambda document: document.update(log_level=name))
        set_level(name)  # also when the config already named it but --log-level overrode it
        return {"level": name}

    @operation("config.clear")
    async def config_clear(self, confirm: bool = False) -> dict[str, Any]:
        """Remove every target and storage object from the running configuration (files kept)."""
        if not confirm:
            raise AdminError("clearconfig removes every target and storage object; repeat with confirm=true")
        old = self.config
        await self._replace(_without_objects(old))
        self.unsaved_changes = True
        return {}


def _timestamp(seconds: float) -> str:
    """Local time to the second, with its zone, for messages an administrator reads."""
    return datetime.datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def _without_objects(config: DaemonConfig) -> DaemonConfig:
    """``config`` with no storage objects or targets: every other setting (front end, state
    directory, log level, odx limits) stays."""
    return dataclasses.replace(config, storage_objects=[], targets=[])
