"""The daemon's configuration model: typed, validated on construction.

The JSON file (documented in docs/configuration.md) maps one to one onto these dataclasses;
``load_config`` parses and validates it and reports every problem with its JSON path.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
class DaemonConfig:
    storage_objects: list[StorageObjectConfig] = field(default_factory=list)
    targets: list[TargetConfig] = field(default_factory=list)
    frontend: str = "native"          # "native" (asyncio iSCSI) or "lio" (TCMU, later)
    state_dir: str = "/var/lib/odxtarget"
    schema_version: int = 1
    log_level: str = "info"
