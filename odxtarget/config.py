"""The daemon's configuration model, and its JSON file format.

The JSON file (documented in docs/configuration.md) maps one to one onto these dataclasses.
``load_config`` reads a file, ``parse_config`` validates an already-decoded object, and
``dump_config`` turns a model back into the JSON shape (``parse_config(dump_config(c)) == c``).

Validation never stops at the first problem: every problem is collected, each with the JSON
path of the value at fault (``targets[0].luns[1].storage_object: no storage object named
"disk9"``), and all are raised together in one ``ConfigError``. Suspicious but legal settings
are logged as warnings on the ``odxtarget.config`` logger.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field, fields
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ExtentConfig:
    """A byte range of a file that backs part of a LUN; files are created sparse."""

    path: str
    offset: int = 0
    length: int | None = None  # None: the rest of the LUN's size


@dataclass(slots=True)
class StorageObjectConfig:
    """A backstore: what a LUN shows, stored in an ordered list of file extents."""

    name: str
    size: int
    extents: list[ExtentConfig]
    block_size: int = 512
    read_only: bool = False
    serial: str | None = None   # default derived from name, stable across restarts
    wwn: str | None = None      # NAA-6 designator (32 hex digits); default derived from serial
    write_cache: bool = True
    physical_block_size: int | None = None  # e.g. 4096 on a 512-byte LUN (512e); None: block_size
    removable: bool = False                 # report removable medium (RMB=1): START STOP UNIT ejects


@dataclass(slots=True)
class ChapConfig:
    """CHAP credentials: ``userid``/``password`` authenticate the initiator; the mutual pair
    authenticates the target to the initiator."""

    userid: str
    password: str
    mutual_userid: str | None = None
    mutual_password: str | None = None


@dataclass(slots=True)
class AclConfig:
    initiator: str                  # initiator IQN allowed to log in
    chap: ChapConfig | None = None  # overrides the target's CHAP for this initiator


@dataclass(slots=True)
class PortalConfig:
    ip: str = "127.0.0.1"
    port: int = 3260


@dataclass(slots=True)
class LunMapping:
    lun: int
    storage_object: str


@dataclass(slots=True)
class TargetConfig:
    iqn: str
    portals: list[PortalConfig] = field(default_factory=lambda: [PortalConfig()])
    luns: list[LunMapping] = field(default_factory=list)
    acls: list[AclConfig] = field(default_factory=list)
    demo_mode: bool = False          # any initiator may log in (ACLs ignored for admission)
    chap: ChapConfig | None = None   # required of every initiator when set (unless its ACL sets its own)
    tpgt: int = 1
    alias: str | None = None


@dataclass(slots=True)
class OdxConfig:
    """Copy manager limits (``odxtarget.copy.CopyLimits`` fields); None keeps the default.

    Kept as plain values so that reading a config never imports the copy manager.
    """

    max_range_descriptors: int | None = None
    default_inactivity_timeout: int | None = None     # seconds
    max_inactivity_timeout: int | None = None         # seconds
    max_token_transfer_bytes: int | None = None
    optimal_transfer_bytes: int | None = None
    write_using_token_budget: float | None = None     # seconds per synchronous WRITE USING TOKEN
    max_rod_bytes: int | None = None
    background_step_bytes: int | None = None

    def limits_overrides(self) -> dict[str, int | float]:
        """The fields that are set, as ``CopyLimits(**overrides)`` keyword arguments."""
        values = ((item.name, getattr(self, item.name)) for item in fields(self))
        return {name: value for name, value in values if value is not None}


@dataclass(slots=True)
class DaemonConfig:
    storage_objects: list[StorageObjectConfig] = field(default_factory=list)
    targets: list[TargetConfig] = field(default_factory=list)
    frontend: str = "native"          # "native" (asyncio iSCSI) or "lio" (kernel LIO + TCMU, docs/lio.md)
    state_dir: str = "/var/lib/odxtarget"
    schema_version: int = 1
    log_level: str = "info"
    odx: OdxConfig = field(default_factory=OdxConfig)   # the optional "odx" section


# -- limits and vocabularies --------------------------------------------------------------------

SCHEMA_VERSION = 1
DEFAULT_CONFIG_PATH = "/etc/odxtarget/config.json"
SUPPORTED_FRONTENDS = ("native", "lio")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
BLOCK_SIZES = (512, 4096)
#: READ CAPACITY(16) reports logical blocks per physical block as a 4-bit exponent (SBC-4 5.20.2).
MAX_BLOCKS_PER_PHYSICAL_BLOCK = 1 << 15
MAX_LUN = 16383                 # SAM-5 4.7.7: the single-level flat LUN space
MAX_TPGT = 65535                # RFC 7143 13.9: a 16-bit tag
MAX_PORT = 65535
MAX_ISCSI_NAME_BYTES = 223      # RFC 3720 3.2.6.1
MAX_ALIAS_BYTES = 255           # RFC 7143 13.6: a short UTF-8 text
MIN_CHAP_SECRET_BYTES = 12      # RFC 7143 9.2.1: under 96 bits needs IPsec, which we lack
MAX_CHAP_SECRET_BYTES = 16      # RFC 7143 9.2.1 asks support up to 128 bits; Windows stops there
MAX_CHAP_NAME_BYTES = 255
MAX_SERIAL_CHARS = 64
STORAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SERIAL = re.compile(r"[\x21-\x7e]+")         # printable ASCII without spaces (SPC-4 7.8.16)
NAA6_WWN = re.compile(r"6[0-9a-fA-F]{31}")    # SPC-4 7.8.6.6.4: IEEE Registered Extended
# The "odx" section (docs/configuration.md); the defaults repeat odxtarget.copy.CopyLimits'.
ODX_INTEGER_KEYS = ("max_range_descriptors", "default_inactivity_timeout", "max_inactivity_timeout")
ODX_SIZE_KEYS = ("max_token_transfer_bytes", "optimal_transfer_bytes", "max_rod_bytes", "background_step_bytes")
ODX_SIZE_GRANULE = 4096               # every block size divides it
MAX_RANGE_DESCRIPTORS = 0xFFFF        # the VPD 8Fh field is 16 bits
MAX_INACTIVITY_TIMEOUT = 0xFFFF_FFFE  # 32 bits; FFFFFFFFh means "no maximum"
MAX_WRITE_USING_TOKEN_BUDGET = 60.0   # past this, initiators time the command out anyway
DEFAULT_INACTIVITY_TIMEOUT = 60
DEFAULT_MAX_INACTIVITY_TIMEOUT = 600
DEFAULT_OPTIMAL_TRANSFER_BYTES = 64 << 20
DEFAULT_MAX_TOKEN_TRANSFER_BYTES = 256 << 20
SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
SIZE_TEXT = re.compile(r"\s*(\d+)\s*([KMGTkmgt]?)\s*")

# RFC 3720 3.2.6.3: iqn.yyyy-mm.reversed.domain[:anything]; eui. + 16 hex; naa. + 16/32 hex
# (RFC 3980). Characters are those RFC 3722 leaves after stringprep, restricted to ASCII.
IQN_NAME = re.compile(r"iqn\.(\d{4})-(\d{2})\.[a-z0-9-]+(\.[a-z0-9-]+)*(:[a-z0-9.:-]*)?")
EUI_NAME = re.compile(r"eui\.[0-9a-fA-F]{16}")
NAA_NAME = re.compile(r"naa\.([0-9a-fA-F]{16}|[0-9a-fA-F]{32})")


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


# -- small public helpers ------------------------------------------------------------------------


def parse_size(value: Any) -> int:
    """A byte count from an integer or a string such as ``"512"``, ``"64K"``, ``"1G"`` (binary).

    Raises:
        ValueError: anything else (the message is user-facing).
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size (integer or string), got {_describe(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value
    match = SIZE_TEXT.fullmatch(value)
    if match is None:
        raise ValueError(
            f'invalid size "{value}": expected an integer or a number with a K, M, G or T suffix'
        )
    return int(match.group(1)) * SIZE_SUFFIXES[match.group(2).upper()]


def format_size(size: int) -> int | str:
    """The shortest exact spelling of a size: ``"1G"`` for 1 GiB, the integer otherwise."""
    for suffix in ("T", "G", "M", "K"):
        unit = SIZE_SUFFIXES[suffix]
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return size


def iscsi_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid iSCSI name (RFC 3720 3.2.6), or None when it is."""
    if len(name.encode("utf-8")) > MAX_ISCSI_NAME_BYTES:
        return f"is longer than {MAX_ISCSI_NAME_BYTES} bytes (RFC 3720 3.2.6.1)"
    if name != name.lower() and name.lower().startswith("iqn."):
        return f'must be lowercase (RFC 3720 3.2.6.1 names are case-folded): "{name.lower()}"'
    if name.startswith("iqn."):
        match = IQN_NAME.fullmatch(name)
        if match is None:
            return (
                "is not a valid iqn name: expected iqn.yyyy-mm.reversed.domain[:identifier] using"
                " only a-z, 0-9, '-', '.', ':' (RFC 3720 3.2.6.3.1)"
            )
        if not 1 <= int(match.group(2)) <= 12:
            return f"has month {match.group(2)} in its date (RFC 3720 3.2.6.3.1 wants yyyy-mm)"
        return None
    if name.startswith("eui."):
        return None if EUI_NAME.fullmatch(name) else (
            "is not a valid eui name: expected eui. and 16 hex digits (RFC 3720 3.2.6.3.2)"
        )
    if name.startswith("naa."):
        return None if NAA_NAME.fullmatch(name) else (
            "is not a valid naa name: expected naa. and 16 or 32 hex digits (RFC 3980)"
        )
    return 'must start with "iqn.", "eui." or "naa." (RFC 3720 3.2.6.3)'


def resolve_extent_length(extents: list[ExtentConfig], index: int, size: int) -> int:
    """The length of extent ``index``, with an open-ended (None) last extent resolved."""
    extent = extents[index]
    if extent.length is not None:
        return extent.length
    return size - sum(e.length or 0 for e in extents[:index])


# -- loading and dumping ------------------------------------------------------------------------


def load_config(path: str) -> DaemonConfig:
    """Read and validate a JSON config file; relative paths in it resolve against its directory.

    Raises:
        ConfigError: the file is missing, unreadable, not JSON, or not a valid config.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise ConfigError(
            path,
            ["config file not found (write one with `odxtarget demo-config --dir DIR`,"
             " or pass --config FILE)"],
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, [f"cannot read config file: {error}"]) from None
    try:
        obj = json.loads(text, object_pairs_hook=_JsonObject.from_pairs)
    except json.JSONDecodeError as error:
        raise ConfigError(
            path, [f"line {error.lineno} column {error.colno}: invalid JSON: {error.msg}"]
        ) from None
    return parse_config(obj, path)


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


def dump_config(config: DaemonConfig) -> dict[str, Any]:
    """The JSON object for a model; ``parse_config(dump_config(c))`` gives ``c`` back."""
    return {
        "schema_version": config.schema_version,
        "frontend": config.frontend,
        "state_dir": config.state_dir,
        "log_level": config.log_level,
        "storage_objects": [_dump_storage_object(so) for so in config.storage_objects],
        "targets": [_dump_target(target) for target in config.targets],
        **_dump_odx(config.odx),
    }


def _dump_odx(odx: OdxConfig) -> dict[str, Any]:
    """``{"odx": {...}}`` with the limits that are set; nothing when all are defaults."""
    overrides = odx.limits_overrides()
    for key in ODX_SIZE_KEYS:
        if key in overrides:
            overrides[key] = format_size(overrides[key])
    return {"odx": overrides} if overrides else {}


def save_config(obj: DaemonConfig | dict[str, Any], path: str) -> None:
    """Write a config file atomically with mode 0600 (it may hold CHAP secrets)."""
    if isinstance(obj, DaemonConfig):
        obj = dump_config(obj)
    text = json.dumps(obj, indent=2) + "\n"
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def demo_config_dict(port: int = 3260) -> dict[str, Any]:
    """The demo configuration: two sparse 1 GiB LUNs next to the config file, open to anyone
    on 127.0.0.1. Image paths are relative, so the file works wherever it is written."""
    return {
        "schema_version": SCHEMA_VERSION,
        "frontend": "native",
        "state_dir": ".",
        "log_level": "info",
        "storage_objects": [
            {
                "name": name,
                "size": "1G",
                "block_size": 512,
                "read_only": False,
                "serial": None,
                "wwn": None,
                "write_cache": True,
                "extents": [{"path": f"{name}.img", "offset": 0, "length": None}],
            }
            for name in ("disk0", "disk1")
        ],
        "targets": [
            {
                "iqn": "iqn.2026-11.org.odxtarget:demo",
                "tpgt": 1,
                "alias": None,
                "portals": [{"ip": "127.0.0.1", "port": port}],
                "luns": [
                    {"lun": 0, "storage_object": "disk0"},
                    {"lun": 1, "storage_object": "disk1"},
                ],
                "demo_mode": True,
                "chap": None,
                "acls": [],
            }
        ],
    }


def _dump_storage_object(so: StorageObjectConfig) -> dict[str, Any]:
    return {
        "name": so.name,
        "size": format_size(so.size),
        "block_size": so.block_size,
        "read_only": so.read_only,
        "serial": so.serial,
        "wwn": so.wwn,
        "write_cache": so.write_cache,
        **({"physical_block_size": so.physical_block_size} if so.physical_block_size else {}),
        **({"removable": True} if so.removable else {}),
        "extents": [
            {"path": e.path, "offset": e.offset, "length": e.length} for e in so.extents
        ],
    }


def _dump_chap(chap: ChapConfig | None) -> dict[str, Any] | None:
    if chap is None:
        return None
    dumped = {"userid": chap.userid, "password": chap.password}
    if chap.mutual_userid is not None:
        dumped["mutual_userid"] = chap.mutual_userid
    if chap.mutual_password is not None:
        dumped["mutual_password"] = chap.mutual_password
    return dumped


def _dump_target(target: TargetConfig) -> dict[str, Any]:
    return {
        "iqn": target.iqn,
        "tpgt": target.tpgt,
        "alias": target.alias,
        "portals": [{"ip": p.ip, "port": p.port} for p in target.portals],
        "luns": [{"lun": m.lun, "storage_object": m.storage_object} for m in target.luns],
        "demo_mode": target.demo_mode,
        "chap": _dump_chap(target.chap),
        "acls": [{"initiator": a.initiator, "chap": _dump_chap(a.chap)} for a in target.acls],
    }


# -- validation ---------------------------------------------------------------------------------


class _JsonObject(dict):
    """A decoded JSON object that remembers keys the file repeated (json keeps the last)."""

    duplicate_keys: list[str]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _JsonObject:
        obj = cls()
        obj.duplicate_keys = []
        for key, value in pairs:
            if key in obj and key not in obj.duplicate_keys:
                obj.duplicate_keys.append(key)
            obj[key] = value
        return obj


_MISSING = object()


def _describe(value: Any) -> str:
    """A JSON-flavoured description of a value, for "expected X, got Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'a string ("{shown}")'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Parser:
    """One validation pass: builds the model and collects problems and warnings."""

    TOP_KEYS = ("schema_version", "frontend", "state_dir", "log_level", "storage_objects", "targets", "odx")
    ODX_KEYS = ODX_INTEGER_KEYS + ODX_SIZE_KEYS + ("write_using_token_budget",)
    STORAGE_KEYS = ("name", "size", "block_size", "read_only", "serial", "wwn", "write_cache",
                    "physical_block_size", "removable", "extents")
    EXTENT_KEYS = ("path", "offset", "length")
    TARGET_KEYS = ("iqn", "tpgt", "alias", "portals", "luns", "demo_mode", "chap", "acls")
    PORTAL_KEYS = ("ip", "port")
    LUN_KEYS = ("lun", "storage_object")
    ACL_KEYS = ("initiator", "chap")
    CHAP_KEYS = ("userid", "password", "mutual_userid", "mutual_password")

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
            self.problem(path or "(top level)", f"expected an object, got {_describe(value)}")
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
            self.problem(here, f"expected an integer, got {_describe(value)}")
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
            self.problem(_join(path, key), f"expected true or false, got {_describe(value)}")
            return default
        return value

    def string(self, obj: dict, key: str, path: str, default: Any, *, nullable: bool = False):
        value = obj.get(key, _MISSING)
        if value is _MISSING or (value is None and nullable):
            return default if value is _MISSING else None
        if not isinstance(value, str):
            expected = "a string or null" if nullable else "a string"
            self.problem(_join(path, key), f"expected {expected}, got {_describe(value)}")
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
            self.problem(_join(path, key), f"expected an array, got {_describe(value)}")
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
            config.odx = self.odx(obj["odx"], "odx")

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
        mapped = {m.storage_object for t in config.targets for m in t.luns}
        for so in config.storage_objects:
            if so.name not in mapped:
                self.warnings.append(f'storage object "{so.name}" is not mapped by any target')
        return config

    # -- copy manager limits ------------------------------------------------------------------

    def odx(self, value: Any, path: str) -> OdxConfig:
        """The "odx" section: CopyLimits overrides, checked by the rules CopyLimits enforces."""
        odx = OdxConfig()
        if self.object(value, path, self.ODX_KEYS) is None:
            return odx
        problems_before = len(self.problems)
        odx.max_range_descriptors = self.integer(value, "max_range_descriptors", path, None, 1,
                                                 MAX_RANGE_DESCRIPTORS)
        for key in ("default_inactivity_timeout", "max_inactivity_timeout"):
            setattr(odx, key, self.integer(value, key, path, None, 1, MAX_INACTIVITY_TIMEOUT))
        for key in ODX_SIZE_KEYS:
            size = self.size(value, key, path, None)
            if isinstance(size, int) and (size == 0 or size % ODX_SIZE_GRANULE):
                self.problem(_join(path, key), f"must be a positive multiple of {ODX_SIZE_GRANULE}, got {size}")
            elif isinstance(size, int):
                setattr(odx, key, size)
        budget = value.get("write_using_token_budget")
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, (int, float)) \
                    or not 0 < budget <= MAX_WRITE_USING_TOKEN_BUDGET:
                self.problem(_join(path, "write_using_token_budget"),
                             f"expected seconds, more than 0 and at most {MAX_WRITE_USING_TOKEN_BUDGET},"
                             f" got {_describe(budget)}")
            else:
                odx.write_using_token_budget = float(budget)
        if len(self.problems) > problems_before:
            return odx
        default_timeout = odx.default_inactivity_timeout or DEFAULT_INACTIVITY_TIMEOUT
        if default_timeout > (odx.max_inactivity_timeout or DEFAULT_MAX_INACTIVITY_TIMEOUT):
            self.problem(_join(path, "default_inactivity_timeout"),
                         "must not exceed max_inactivity_timeout (default 600)")
        optimal = odx.optimal_transfer_bytes or DEFAULT_OPTIMAL_TRANSFER_BYTES
        if optimal > (odx.max_token_transfer_bytes or DEFAULT_MAX_TOKEN_TRANSFER_BYTES):
            self.problem(_join(path, "optimal_transfer_bytes"),
                         "must not exceed max_token_transfer_bytes (default 256M)")
        return odx

    # -- storage objects ----------------------------------------------------------------------

    def storage_object(self, item: Any, path: str, state_dir: str) -> StorageObjectConfig | None:
        problems_before = len(self.problems)
        if self.object(item, path, self.STORAGE_KEYS, required=("name", "size")) is None:
            return None
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
        extents = self.extents(item, path, name, state_dir, size, block_size)
        if len(self.problems) > problems_before:
            return None
        return StorageObjectConfig(
            name=name, size=size, extents=extents, block_size=block_size, read_only=read_only,
            serial=serial, wwn=wwn, write_cache=write_cache,
            physical_block_size=physical_block_size, removable=removable,
        )

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
        alias = self.string(item, "alias", path, None, nullable=True)
        if alias is not None and (
            len(alias.encode("utf-8")) > MAX_ALIAS_BYTES or not alias.isprintable()
        ):
            self.problem(
                _join(path, "alias"),
                f"must be printable text of at most {MAX_ALIAS_BYTES} bytes",
            )
        demo_mode = self.boolean(item, "demo_mode", path, False)
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
            ip = self.string(entry, "ip", here, None)
            if ip is not None:
                try:
                    ip = str(ipaddress.ip_address(ip))
                except ValueError:
                    self.problem(_join(here, "ip"), f'"{ip}" is not an IPv4 or IPv6 address')
                    ip = None
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
            if initiator is not None:
                first = seen_initiators.setdefault(initiator, here)
                if first != here:
                    self.problem(
                        _join(here, "initiator"), f'duplicate ACL for "{initiator}" (also {first})'
                    )
                acls.append(AclConfig(initiator, acl_chap))

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
            tpgt=tpgt, alias=alias,
        )

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
