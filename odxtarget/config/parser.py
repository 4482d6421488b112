"""Validating a decoded configuration file and building the model from it.

Validation never stops at the first problem: every problem is collected, each with the JSON
path of the value at fault (``targets[0].luns[1].storage_object: no storage object named
"disk9"``), and all are raised together in one ``ConfigError``. Suspicious but legal settings
are logged as warnings on the ``odxtarget.config`` logger.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
from typing import Any

from odxtarget.config.limit_sections import ISCSI_SECTION, ODX_SECTION, LimitKey, LimitSection
from odxtarget.config.model import (
    AclConfig,
    BlockConfig,
    ChapConfig,
    DaemonConfig,
    ExtentConfig,
    LunMapping,
    MappedLunConfig,
    MetricsConfig,
    OdxConfig,
    PortalConfig,
    RbdConfig,
    StorageObjectConfig,
    TargetConfig,
    format_portal,
    resolve_extent_length,
)
from odxtarget.config.vocabulary import (
    BLOCK_SIZES,
    LOG_LEVELS,
    MAX_ALIAS_BYTES,
    MAX_BLOCKS_PER_PHYSICAL_BLOCK,
    MAX_CHAP_NAME_BYTES,
    MAX_CHAP_SECRET_BYTES,
    MAX_LUN,
    MAX_PORT,
    MAX_SERIAL_CHARS,
    MAX_TPGT,
    MIN_CHAP_SECRET_BYTES,
    NAA6_WWN,
    RBD_NAME,
    SCHEMA_VERSION,
    SERIAL,
    STORAGE_NAME,
    SUPPORTED_FRONTENDS,
    describe_value,
    iscsi_name_problem,
    parse_size,
)
from odxtarget.storage import block_device
from odxtarget.transport.iscsi.limits import IscsiLimits

log = logging.getLogger("odxtarget.config")


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` lists each as "json.path: what"."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        lines = [f"{self.source}: {len(self.problems)} problems:"]
        lines.extend(f"  {problem}" for problem in self.problems)
        return "\n".join(lines)


def parse_config(obj: Any, source: str = "<config>", *, base_dir: str | None = None) -> DaemonConfig:
    """Validate a decoded JSON object and build the model.

    Args:
        obj: what ``json.load`` returned.
        source: the file name used in messages; relative paths in the config resolve against
            its directory unless ``base_dir`` is given (for a non-file source such as
            ``"<config>"`` that is the current directory).
        base_dir: overrides the directory relative paths resolve against.

    Raises:
        ConfigError: with every problem found.
    """
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(source))
    parser = _Parser(base_dir)
    config = parser.daemon(obj)
    if parser.problems:
        raise ConfigError(source, parser.problems)
    for warning in parser.warnings:
        log.warning("%s: %s", source, warning)
    return config


_MISSING = object()


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Parser:
    """One validation pass: builds the model and collects problems and warnings."""

    TOP_KEYS = ("schema_version", "frontend", "state_dir", "log_level", "storage_objects", "targets",
                "odx", "iscsi", "metrics")
    STORAGE_KEYS = ("name", "size", "block_size", "read_only", "serial", "wwn", "write_cache",
                    "physical_block_size", "removable", "extents", "rbd", "block")
    EXTENT_KEYS = ("path", "offset", "length")
    RBD_KEYS = ("pool", "image", "conf", "client", "keyring")
    BLOCK_KEYS = ("path",)
    TARGET_KEYS = ("iqn", "tpgt", "alias", "portals", "luns", "demo_mode", "chap", "acls", "port_groups",
                   "demo_mode_write_protect", "allow_unauthenticated_writes")
    PORTAL_KEYS = ("ip", "port")
    LUN_KEYS = ("lun", "storage_object")
    ACL_KEYS = ("initiator", "chap", "mapped_luns")
    MAPPED_LUN_KEYS = ("mapped_lun", "lun", "write_protect")
    CHAP_KEYS = ("userid", "password", "mutual_userid", "mutual_password")
    METRICS_KEYS = ("ip", "port")

    def __init__(self, base_dir: str):
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    # -- generic readers ----------------------------------------------------------------------

    def object(self, value: Any, path: str, keys: tuple[str, ...], required: tuple[str, ...] = ()):
        """Check ``value`` is an object with only ``keys`` and all of ``required``."""
        if not isinstance(value, dict):
            self.problem(path or "(top level)", f"expected an object, got {describe_value(value)}")
            return None
        for key in getattr(value, "duplicate_keys", ()):
            self.problem(_join(path, key), "key appears more than once")
        for key in value:
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f'did you mean "{close[0]}"?' if close else "expected one of: " + ", ".join(keys)
                self.problem(_join(path, key), f"unknown key ({hint})")
        for key in required:
            if key not in value:
                self.problem(_join(path, key), "missing required key")
        return value

    def integer(self, obj: dict, key: str, path: str, default: Any, low: int, high: int | None = None):
        value = obj.get(key, _MISSING)
        if value is _MISSING:
            return default
        here = _join(path, key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(here, f"expected an integer, got {describe_value(value)}")
            return default
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(here, f"must be {bound}, got {value}")
            return default
        return value

    def boolean(self, obj: dict, key: str, path: str, default: bool) -> bool:
        value = obj.get(key, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.problem(_join(path, key), f"expected true or false, got {describe_value(value)}")
            return default
        return value

    def string(self, obj: dict, key: str, path: str, default: Any, *, nullable: bool = False):
        value = obj.get(key, _MISSING)
        if value is _MISSING or (value is None and nullable):
            return default if value is _MISSING else None
        if not isinstance(value, str):
            expected = "a string or null" if nullable else "a string"
            self.problem(_join(path, key), f"expected {expected}, got {describe_value(value)}")
            return default
        if not value:
            self.problem(_join(path, key), "must not be empty")
            return default
        return value

    def choice(self, obj: dict, key: str, path: str, default: str, choices: tuple[str, ...],
               *, fold_case: bool = False) -> str:
        value = self.string(obj, key, path, default)
        if fold_case and value is not None:
            value = value.lower()
        if value not in choices:
            listed = ", ".join(f'"{c}"' for c in choices)
            self.problem(_join(path, key), f'"{value}" is not supported (expected {listed})')
            return default
        return value

    def size(self, obj: dict, key: str, path: str, default: Any, *, nullable: bool = False):
        value = obj.get(key, _MISSING)
        if value is _MISSING or (value is None and nullable):
            return default if value is _MISSING else None
        try:
            return parse_size(value)
        except ValueError as error:
            self.problem(_join(path, key), str(error))
            return _MISSING

    def array(self, obj: dict, key: str, path: str) -> list | None:
        """The array at ``key`` (None when absent); a problem if it is not an array."""
        value = obj.get(key, _MISSING)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            self.problem(_join(path, key), f"expected an array, got {describe_value(value)}")
            return []
        return value

    def resolve_path(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(path)))

    # -- the document -------------------------------------------------------------------------

    def daemon(self, obj: Any) -> DaemonConfig:
        config = DaemonConfig()
        if self.object(obj, "", self.TOP_KEYS) is None:
            return config
        config.schema_version = self.integer(obj, "schema_version", "", SCHEMA_VERSION, 0)
        if config.schema_version != SCHEMA_VERSION:
            self.problem(
                "schema_version",
                f"unsupported version {config.schema_version} (this odxtarget reads version"
                f" {SCHEMA_VERSION})",
            )
            return config  # the rest would be judged by the wrong rules
        config.frontend = self.choice(obj, "frontend", "", config.frontend, SUPPORTED_FRONTENDS)
        config.log_level = self.choice(
            obj, "log_level", "", config.log_level, LOG_LEVELS, fold_case=True
        )
        state_dir = self.string(obj, "state_dir", "", config.state_dir)
        config.state_dir = self.resolve_path(state_dir)
        if obj.get("odx") is not None:
            odx = self.limits_section(obj["odx"], ODX_SECTION)
            if odx is not None:
                config.odx = OdxConfig(**odx)
        if obj.get("iscsi") is not None:
            iscsi = self.limits_section(obj["iscsi"], ISCSI_SECTION)
            if iscsi is not None:
                config.iscsi = IscsiLimits(**iscsi)
        if obj.get("metrics") is not None:
            config.metrics = self.metrics(obj["metrics"])

        indexed_objects: list[tuple[int, StorageObjectConfig]] = []
        for index, item in enumerate(self.array(obj, "storage_objects", "") or []):
            storage_object = self.storage_object(item, f"storage_objects[{index}]", config.state_dir)
            if storage_object is not None:
                indexed_objects.append((index, storage_object))
        self.check_storage_objects(obj.get("storage_objects"), indexed_objects)
        config.storage_objects = [so for _, so in indexed_objects]

        # Objects named but invalid still count as existing: their own problems are reported,
        # and every LUN mapping them need not repeat it.
        raw_objects = obj.get("storage_objects")
        names = {
            item["name"] for item in (raw_objects if isinstance(raw_objects, list) else ())
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        }
        seen_iqns: dict[str, str] = {}
        for index, item in enumerate(self.array(obj, "targets", "") or []):
            target = self.target(item, f"targets[{index}]", names, seen_iqns)
            if target is not None:
                config.targets.append(target)
                self.check_unauthenticated_writes(target, f"targets[{index}]", config.storage_objects)
        mapped = {m.storage_object for t in config.targets for m in t.luns}
        for so in config.storage_objects:
            if so.name not in mapped:
                self.warnings.append(f'storage object "{so.name}" is not mapped by any target')
        return config

    def check_unauthenticated_writes(self, target: TargetConfig, path: str,
                                     storage_objects: list[StorageObjectConfig]) -> None:
        """Refuse a target anyone may write to without CHAP from another host, unless the file
        says ``allow_unauthenticated_writes`` (docs/security.md, "Demo mode")."""
        writable = {so.name for so in storage_objects if not so.read_only}
        exposed = target.unauthenticated_write_portals(writable)
        if exposed and not target.allow_unauthenticated_writes:
            where = ", ".join(format_portal(portal) for portal in exposed)
            self.problem(path, f"target {target.iqn} lets any initiator write without CHAP on {where}"
                               ' (demo_mode true, no chap, writable LUNs): set "chap", or'
                               ' "demo_mode_write_protect": true, or ACLs with demo_mode false, or'
                               ' loopback portals only, or "allow_unauthenticated_writes": true')

    # -- the metrics endpoint (docs/metrics.md) -------------------------------------------------

    def metrics(self, value: Any) -> MetricsConfig | None:
        """Where the Prometheus endpoint listens; a warning when that is beyond this host."""
        path = "metrics"
        defaults = MetricsConfig()
        if self.object(value, path, self.METRICS_KEYS) is None:
            return None
        problems_before = len(self.problems)
        ip = self.ip_address(value, "ip", path, defaults.ip)
        port = self.integer(value, "port", path, defaults.port, 0, MAX_PORT)  # 0: any free port
        if len(self.problems) > problems_before or ip is None:
            return None
        if not ipaddress.ip_address(ip).is_loopback:
            self.warnings.append(f"metrics.ip: {ip} serves the metrics (target and storage object names,"
                                 " I/O rates) to the network; bind a loopback or management address")
        return MetricsConfig(ip=ip, port=port)

    def ip_address(self, obj: dict, key: str, path: str, default: str | None) -> str | None:
        """An IPv4 or IPv6 address in its normal spelling."""
        ip = self.string(obj, key, path, default)
        if ip is None:
            return None
        try:
            return str(ipaddress.ip_address(ip))
        except ValueError:
            self.problem(_join(path, key), f'"{ip}" is not an IPv4 or IPv6 address')
            return None

    # -- limits sections ----------------------------------------------------------------------

    def limits_section(self, value: Any, section: LimitSection) -> dict[str, int | float] | None:
        """The keys a limits section sets, each checked alone, then against the fields it must
        not exceed, then by constructing the section's dataclass (so that a file this accepts
        never stops the daemon); None when the section has a problem."""
        path = section.name
        if self.object(value, path, section.key_names) is None:
            return None
        problems_before = len(self.problems)
        values: dict[str, int | float] = {}
        for key in section.keys:
            checked = self.limit(value, path, key)
            if checked is not None:
                values[key.name] = checked
        if len(self.problems) > problems_before:
            return None
        for key in section.keys:
            if key.at_most is not None:
                self.limit_order(values, section, key)
        if len(self.problems) > problems_before:
            return None
        try:
            section.limits_class(**values)
        except ValueError as error:
            self.problem(path, str(error))
            return None
        return values

    def limit_order(self, values: dict[str, int | float], section: LimitSection, key: LimitKey) -> None:
        """``key`` must not exceed the field ``key.at_most``; the problem is reported at the key
        the file set (at ``key`` when it set both)."""
        other = key.at_most
        value = values.get(key.name, key.default)
        limit = values.get(other, section.default(other))
        if value <= limit:
            return
        if key.name in values:
            limit_text = (section.key(other).spelled(limit) if other in values
                          else f"default {section.shown_default(other)}")
            self.problem(_join(section.name, key.name), f"must not exceed {other} ({limit_text})")
        else:
            self.problem(_join(section.name, other),
                         f"must be at least {key.name} (default {section.shown_default(key.name)})")

    def limit(self, obj: dict, path: str, key: LimitKey) -> int | float | None:
        """The value of ``key`` in a limits section, positive and within the key's bounds;
        None when absent or wrong."""
        if key.name not in obj:
            return None
        here = _join(path, key.name)
        if key.kind == "integer":
            return self.integer(obj, key.name, path, None, 1, key.maximum)
        if key.kind == "seconds":
            value = obj[key.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 \
                    or (key.maximum is not None and value > key.maximum):
                bound = "more than 0" + (f" and at most {key.maximum}" if key.maximum is not None else "")
                self.problem(here, f"expected seconds, {bound}, got {describe_value(value)}")
                return None
            return float(value)
        size = self.size(obj, key.name, path, None)
        if size is _MISSING:
            return None
        if key.multiple_of is not None and (size == 0 or size % key.multiple_of):
            self.problem(here, f"must be a positive multiple of {key.multiple_of}, got {size}")
        elif size == 0:
            self.problem(here, "must be positive")
        elif key.maximum is not None and size > key.maximum:
            self.problem(here, f"must be at most {key.spelled(key.maximum)}, got {size}")
        else:
            return size
        return None

    # -- storage objects ----------------------------------------------------------------------

    def storage_object(self, item: Any, path: str, state_dir: str) -> StorageObjectConfig | None:
        problems_before = len(self.problems)
        if self.object(item, path, self.STORAGE_KEYS, required=("name",)) is None:
            return None
        if "size" not in item and item.get("block") is None:  # a device's size is its default
            self.problem(_join(path, "size"), "missing required key")
        name = self.string(item, "name", path, None)
        if name is not None and not STORAGE_NAME.fullmatch(name):
            self.problem(
                _join(path, "name"),
                f'"{name}" is not a valid name (1 to 64 of A-Z a-z 0-9 _ . -, not starting'
                " with _ . -)",
            )
        block_size = self.integer(item, "block_size", path, 512, 0)
        if block_size not in BLOCK_SIZES:
            self.problem(_join(path, "block_size"), f"must be 512 or 4096, got {block_size}")
            block_size = 512
        size = self.size(item, "size", path, None)
        if isinstance(size, int):
            if size == 0:
                self.problem(_join(path, "size"), "must be positive")
            elif size % block_size:
                self.problem(
                    _join(path, "size"),
                    f"{size} bytes is not a multiple of block_size {block_size}",
                )
        read_only = self.boolean(item, "read_only", path, False)
        write_cache = self.boolean(item, "write_cache", path, True)
        removable = self.boolean(item, "removable", path, False)
        physical_block_size = None
        if item.get("physical_block_size") is not None:
            physical_block_size = self.integer(item, "physical_block_size", path, None, block_size)
        if physical_block_size is not None:
            ratio = physical_block_size // block_size
            if (physical_block_size % block_size or ratio & (ratio - 1)
                    or ratio > MAX_BLOCKS_PER_PHYSICAL_BLOCK):
                self.problem(
                    _join(path, "physical_block_size"),
                    f"must be block_size ({block_size}) times a power of two up to"
                    f" {MAX_BLOCKS_PER_PHYSICAL_BLOCK}, got {physical_block_size}",
                )
        serial = self.string(item, "serial", path, None, nullable=True)
        if serial is not None and (len(serial) > MAX_SERIAL_CHARS or not SERIAL.fullmatch(serial)):
            self.problem(
                _join(path, "serial"),
                f"must be 1 to {MAX_SERIAL_CHARS} printable ASCII characters without spaces",
            )
        wwn = self.string(item, "wwn", path, None, nullable=True)
        if wwn is not None:
            if NAA6_WWN.fullmatch(wwn):
                wwn = wwn.lower()
            else:
                self.problem(
                    _join(path, "wwn"),
                    "must be 32 hex digits starting with 6 (an NAA-6 designator, SPC-4 7.8.6.6.4)",
                )
        rbd = block = None
        if item.get("block") is not None:
            for other in ("extents", "rbd"):
                if item.get(other) is not None:
                    self.problem(_join(path, "block"), f"a storage object has either {other} or block, not both")
            extents = []
            block, size = self.block(item["block"], _join(path, "block"), size, block_size,
                                     _join(path, "size"))
        elif item.get("rbd") is not None:
            if item.get("extents") is not None:
                self.problem(_join(path, "rbd"), "a storage object has either extents or rbd, not both")
            rbd = self.rbd(item["rbd"], _join(path, "rbd"))
            extents: list[ExtentConfig] = []
        else:
            extents = self.extents(item, path, name, state_dir, size, block_size)
        if len(self.problems) > problems_before:
            return None
        return StorageObjectConfig(
            name=name, size=size, extents=extents, block_size=block_size, read_only=read_only,
            serial=serial, wwn=wwn, write_cache=write_cache,
            physical_block_size=physical_block_size, removable=removable, rbd=rbd, block=block,
        )

    def rbd(self, item: Any, path: str) -> RbdConfig | None:
        """The ``rbd`` section: an image in a Ceph pool (docs/rbd.md)."""
        if self.object(item, path, self.RBD_KEYS, required=("image",)) is None:
            return None
        defaults = RbdConfig(image="")
        image = self.string(item, "image", path, None)
        pool = self.string(item, "pool", path, defaults.pool)
        for key, value in (("image", image), ("pool", pool)):
            if isinstance(value, str) and not RBD_NAME.fullmatch(value):
                self.problem(_join(path, key), f'"{value}" is not a valid RBD name (no "/" or "@",'
                             " no spaces or control characters)")
        conf = self.string(item, "conf", path, defaults.conf)
        client = self.string(item, "client", path, defaults.client)
        if isinstance(client, str) and client.startswith("client."):
            self.problem(_join(path, "client"), f'give the user id without "client." ("{client[7:]}")')
        keyring = self.string(item, "keyring", path, None, nullable=True)
        if image is None or pool is None or conf is None or client is None:
            return None
        return RbdConfig(image=image, pool=pool, conf=self.resolve_path(conf), client=client,
                         keyring=self.resolve_path(keyring) if keyring else None)

    def block(self, item: Any, path: str, size: Any, block_size: int,
              size_path: str) -> tuple[BlockConfig | None, Any]:
        """The ``block`` section: a block device (docs/block.md). Returns it and the storage
        object's size: the device's own when none is given, else one that fits the device."""
        if self.object(item, path, self.BLOCK_KEYS, required=("path",)) is None:
            return None, size
        device = self.string(item, "path", path, None)
        if device is None:
            return None, size
        device = self.resolve_path(device)
        try:
            facts = block_device.probe(device)
        except OSError as error:
            self.problem(_join(path, "path"), f"{device}: {error.strerror}")
            return None, size
        if facts.logical_sector_size > block_size:
            self.problem(path, f"{device} has {facts.logical_sector_size}-byte logical sectors:"
                         f" block_size {block_size} is too small")
        if size is None:
            size = facts.size // block_size * block_size
            if not size:
                self.problem(path, f"{device} holds {facts.size} bytes, less than one block")
        elif isinstance(size, int) and size > facts.size:
            self.problem(size_path, f"{size} bytes is more than {device} holds ({facts.size} bytes)")
        return BlockConfig(device), size

    def extents(self, item: dict, path: str, name: str | None, state_dir: str,
                size: Any, block_size: int) -> list[ExtentConfig]:
        raw = self.array(item, "extents", path)
        if raw is None:  # the default: one sparse image named after the object, in state_dir
            return [ExtentConfig(os.path.join(state_dir, f"{name}.img"))] if name else []
        here = _join(path, "extents")
        if not raw:
            self.problem(here, "needs at least one extent")
            return []
        extents: list[ExtentConfig] = []
        covered = 0
        ok = True
        for index, entry in enumerate(raw):
            extent_path = f"{here}[{index}]"
            if self.object(entry, extent_path, self.EXTENT_KEYS, required=("path",)) is None:
                ok = False
                continue
            file_path = self.string(entry, "path", extent_path, None)
            offset = self.size(entry, "offset", extent_path, 0)
            length = self.size(entry, "length", extent_path, None, nullable=True)
            for key, value in (("offset", offset), ("length", length)):
                if isinstance(value, int) and value % block_size:
                    self.problem(
                        _join(extent_path, key),
                        f"{value} is not a multiple of block_size {block_size}",
                    )
                    ok = False
            if length == 0:
                self.problem(_join(extent_path, "length"), "must be positive (or null for the rest)")
                ok = False
            if length is None and index != len(raw) - 1:
                self.problem(
                    _join(extent_path, "length"),
                    "only the last extent may be null (the rest of the size)",
                )
                ok = False
            if file_path is None or offset is _MISSING or length is _MISSING:
                ok = False
                continue
            if isinstance(length, int):
                covered += length
            extents.append(ExtentConfig(self.resolve_path(file_path), offset, length))
        if not ok or not isinstance(size, int) or size == 0:
            return extents
        if extents[-1].length is None:
            if covered >= size:
                self.problem(
                    f"{here}[{len(raw) - 1}].length",
                    f"nothing is left for this open-ended extent: the earlier extents already"
                    f" cover {covered} of {size} bytes",
                )
        elif covered != size:
            self.problem(here, f"the extents cover {covered} bytes but size is {size}")
        return extents

    def check_storage_objects(self, raw: Any, objects: list[tuple[int, StorageObjectConfig]]) -> None:
        """Cross-object rules: unique names, serials and WWNs; no two extents share file bytes."""
        if not isinstance(raw, list):
            return
        seen: dict[tuple[str, str], str] = {}
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                continue
            for key, what in (("name", "storage object name"), ("serial", "serial"), ("wwn", "wwn")):
                value = item.get(key)
                if not isinstance(value, str):
                    continue
                normal = value.lower() if key == "wwn" else value
                here = f"storage_objects[{index}]"
                first = seen.setdefault((key, normal), here)
                if first != here:
                    self.problem(f"{here}.{key}", f'duplicate {what} "{value}" (also {first})')
        devices: dict[int, str] = {}
        for index, so in objects:
            if so.block is not None:
                here = f"storage_objects[{index}].block.path"
                try:
                    device = os.stat(so.block.path).st_rdev
                except OSError:
                    continue
                first = devices.setdefault(device, here)
                if first != here:
                    self.problem(here, f"device {so.block.path} is also used by {first}")
        images: dict[tuple[str, str, str], str] = {}
        for index, so in objects:
            if so.rbd is not None:
                here = f"storage_objects[{index}].rbd"
                first = images.setdefault((so.rbd.conf, so.rbd.pool, so.rbd.image), here)
                if first != here:
                    self.problem(here, f"image {so.rbd.pool}/{so.rbd.image} is also used by {first}")
        by_file: dict[str, list[tuple[int, int, str]]] = {}
        for index, so in objects:
            for number, extent in enumerate(so.extents):
                start = extent.offset
                end = start + resolve_extent_length(so.extents, number, so.size)
                by_file.setdefault(extent.path, []).append(
                    (start, end, f"storage_objects[{index}].extents[{number}]")
                )
        for file_path, ranges in by_file.items():
            ranges.sort()
            for (start_a, end_a, where_a), (start_b, end_b, where_b) in zip(ranges, ranges[1:]):
                if start_b < end_a:
                    self.problem(
                        where_b,
                        f"overlaps {where_a} in {file_path} (bytes [{start_a}, {end_a}) and"
                        f" [{start_b}, {end_b}))",
                    )

    # -- targets ------------------------------------------------------------------------------

    def target(self, item: Any, path: str, storage_names: set[str],
               seen_iqns: dict[str, str]) -> TargetConfig | None:
        problems_before = len(self.problems)
        if self.object(item, path, self.TARGET_KEYS, required=("iqn",)) is None:
            return None
        iqn = self.iscsi_name(item, "iqn", path)
        if iqn is not None:
            first = seen_iqns.setdefault(iqn, path)
            if first != path:
                self.problem(_join(path, "iqn"), f'duplicate target "{iqn}" (also {first})')
        tpgt = self.integer(item, "tpgt", path, 1, 0, MAX_TPGT)
        port_groups = self.port_groups(item, path, tpgt)
        alias = self.string(item, "alias", path, None, nullable=True)
        if alias is not None and (
            len(alias.encode("utf-8")) > MAX_ALIAS_BYTES or not alias.isprintable()
        ):
            self.problem(
                _join(path, "alias"),
                f"must be printable text of at most {MAX_ALIAS_BYTES} bytes",
            )
        demo_mode = self.boolean(item, "demo_mode", path, False)
        demo_mode_write_protect = self.boolean(item, "demo_mode_write_protect", path, False)
        allow_unauthenticated_writes = self.boolean(item, "allow_unauthenticated_writes", path, False)
        chap = self.chap(item.get("chap"), _join(path, "chap"))

        portals: list[PortalConfig] = []
        raw_portals = self.array(item, "portals", path)
        if raw_portals is None:
            portals = [PortalConfig()]
        elif not raw_portals and isinstance(item.get("portals"), list):
            self.problem(_join(path, "portals"), "needs at least one portal")
        seen_portals: dict[tuple[str, int], str] = {}
        for index, entry in enumerate(raw_portals or []):
            here = f"{path}.portals[{index}]"
            if self.object(entry, here, self.PORTAL_KEYS, required=("ip",)) is None:
                continue
            ip = self.ip_address(entry, "ip", here, None)
            port = self.integer(entry, "port", here, 3260, 0, MAX_PORT)  # 0: any free port
            if ip is None:
                continue
            first = seen_portals.setdefault((ip, port), here)
            if first != here:
                self.problem(here, f"duplicate portal {ip}:{port} (also {first})")
            portals.append(PortalConfig(ip, port))

        luns: list[LunMapping] = []
        seen_luns: dict[int, str] = {}
        seen_objects: dict[str, str] = {}
        for index, entry in enumerate(self.array(item, "luns", path) or []):
            here = f"{path}.luns[{index}]"
            if self.object(entry, here, self.LUN_KEYS, required=("lun", "storage_object")) is None:
                continue
            lun = self.integer(entry, "lun", here, None, 0, MAX_LUN)
            name = self.string(entry, "storage_object", here, None)
            if lun is not None:
                first = seen_luns.setdefault(lun, here)
                if first != here:
                    self.problem(_join(here, "lun"), f"duplicate LUN {lun} (also {first})")
            if name is not None:
                if name not in storage_names:
                    self.problem(
                        _join(here, "storage_object"), f'no storage object named "{name}"'
                    )
                else:
                    first = seen_objects.setdefault(name, here)
                    if first != here:
                        self.problem(
                            _join(here, "storage_object"),
                            f'"{name}" is already mapped in this target (at {first})',
                        )
            if lun is not None and name is not None:
                luns.append(LunMapping(lun, name))

        acls: list[AclConfig] = []
        seen_initiators: dict[str, str] = {}
        for index, entry in enumerate(self.array(item, "acls", path) or []):
            here = f"{path}.acls[{index}]"
            if self.object(entry, here, self.ACL_KEYS, required=("initiator",)) is None:
                continue
            initiator = self.iscsi_name(entry, "initiator", here)
            acl_chap = self.chap(entry.get("chap"), _join(here, "chap"))
            mapped_luns = self.mapped_luns(entry, here, {m.lun for m in luns})
            if initiator is not None:
                first = seen_initiators.setdefault(initiator, here)
                if first != here:
                    self.problem(
                        _join(here, "initiator"), f'duplicate ACL for "{initiator}" (also {first})'
                    )
                acls.append(AclConfig(initiator, acl_chap, mapped_luns))

        if len(self.problems) > problems_before:
            return None
        if not luns:
            self.warnings.append(f"{path}: target {iqn} maps no LUNs")
        if not demo_mode and not acls:
            self.warnings.append(
                f"{path}: target {iqn} has demo_mode false and no ACLs: no initiator can log in"
            )
        return TargetConfig(
            iqn=iqn, portals=portals, luns=luns, acls=acls, demo_mode=demo_mode, chap=chap,
            tpgt=tpgt, alias=alias, port_groups=port_groups,
            demo_mode_write_protect=demo_mode_write_protect,
            allow_unauthenticated_writes=allow_unauthenticated_writes,
        )

    def mapped_luns(self, acl: dict, path: str, target_luns: set[int]) -> list[MappedLunConfig] | None:
        """An ACL's ``mapped_luns`` (LUN masking): each names one of the target's LUNs and the
        number the initiator sees it under, unique within the ACL; None when absent."""
        raw = self.array(acl, "mapped_luns", path)
        if raw is None:
            return None
        here = _join(path, "mapped_luns")
        mapped: list[MappedLunConfig] = []
        seen: dict[int, str] = {}
        for index, entry in enumerate(raw):
            entry_path = f"{here}[{index}]"
            if self.object(entry, entry_path, self.MAPPED_LUN_KEYS, required=("mapped_lun", "lun")) is None:
                continue
            number = self.integer(entry, "mapped_lun", entry_path, None, 0, MAX_LUN)
            lun = self.integer(entry, "lun", entry_path, None, 0, MAX_LUN)
            write_protect = self.boolean(entry, "write_protect", entry_path, False)
            if number is not None:
                first = seen.setdefault(number, entry_path)
                if first != entry_path:
                    self.problem(_join(entry_path, "mapped_lun"), f"duplicate mapped LUN {number} (also {first})")
                    number = None
            if lun is not None and lun not in target_luns:
                known = ", ".join(str(n) for n in sorted(target_luns)) or "none"
                self.problem(_join(entry_path, "lun"), f"the target has no LUN {lun} (its LUNs: {known})")
                lun = None
            if number is not None and lun is not None:
                mapped.append(MappedLunConfig(number, lun, write_protect))
        return mapped

    def port_groups(self, item: dict, path: str, tpgt: int) -> list[int]:
        """``port_groups``: distinct TPGTs of 1 to 65535 that include the target's own."""
        raw = self.array(item, "port_groups", path)
        if raw is None:
            return []
        here = _join(path, "port_groups")
        groups: list[int] = []
        for index, value in enumerate(raw):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TPGT:
                self.problem(f"{here}[{index}]", f"must be a TPGT between 1 and {MAX_TPGT}, got {describe_value(value)}")
            elif value in groups:
                self.problem(f"{here}[{index}]", f"duplicate port group {value}")
            else:
                groups.append(value)
        if groups and tpgt not in groups:
            self.problem(here, f"must include this target's own tpgt {tpgt}")
        return groups

    def iscsi_name(self, obj: dict, key: str, path: str) -> str | None:
        name = self.string(obj, key, path, None)
        if name is None:
            return None
        problem = iscsi_name_problem(name)
        if problem is not None:
            self.problem(_join(path, key), f'"{name}" {problem}')
            return None
        return name

    def chap(self, value: Any, path: str) -> ChapConfig | None:
        """CHAP credentials (RFC 7143 12.1.3); secrets follow RFC 7143 9.2.1."""
        if value is None:
            return None
        problems_before = len(self.problems)
        if self.object(value, path, self.CHAP_KEYS) is None:
            return None
        userid = self.string(value, "userid", path, None)
        password = self.string(value, "password", path, None)
        mutual_userid = self.string(value, "mutual_userid", path, None, nullable=True)
        mutual_password = self.string(value, "mutual_password", path, None, nullable=True)
        mutual = mutual_userid is not None or mutual_password is not None
        if userid is None and password is None and mutual:
            self.problem(path, "mutual CHAP needs one-way CHAP too: set userid and password")
        else:
            for key, present in (("userid", userid), ("password", password)):
                if present is None and key not in value:
                    self.problem(_join(path, key), "missing required key")
        if mutual and (mutual_userid is None) != (mutual_password is None):
            missing = "mutual_password" if mutual_password is None else "mutual_userid"
            self.problem(_join(path, missing), "mutual CHAP needs both mutual_userid and mutual_password")
        for key, name in (("userid", userid), ("mutual_userid", mutual_userid)):
            if name is not None and len(name.encode("utf-8")) > MAX_CHAP_NAME_BYTES:
                self.problem(_join(path, key), f"must be at most {MAX_CHAP_NAME_BYTES} bytes")
        for key, secret in (("password", password), ("mutual_password", mutual_password)):
            if secret is None:
                continue
            length = len(secret.encode("utf-8"))
            if length < MIN_CHAP_SECRET_BYTES:
                self.problem(
                    _join(path, key),
                    f"is {length} bytes; CHAP secrets must be at least {MIN_CHAP_SECRET_BYTES}"
                    " bytes (RFC 7143 9.2.1)",
                )
            elif length > MAX_CHAP_SECRET_BYTES:
                self.warnings.append(
                    f"{_join(path, key)}: is {length} bytes; some initiators (Windows) accept"
                    f" at most {MAX_CHAP_SECRET_BYTES}"
                )
        if password is not None and password == mutual_password:
            self.problem(
                _join(path, "mutual_password"),
                "must differ from password (RFC 7143 9.2.1: a secret is never used in both"
                " directions)",
            )
        if len(self.problems) > problems_before:
            return None
        return ChapConfig(userid, password, mutual_userid, mutual_password)
