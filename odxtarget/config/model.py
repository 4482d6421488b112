"""The typed configuration model: the JSON file (docs/configuration.md) maps one to one onto
these dataclasses. ``odxtarget.config.parser`` builds them from a decoded file and
``odxtarget.config.dump`` turns them back into one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

from odxtarget.config.limit_sections import ODX_SECTION
from odxtarget.transport.iscsi.limits import IscsiLimits


@dataclass(slots=True)
class ExtentConfig:
    """A byte range of a file that backs part of a LUN; files are created sparse.

    It is the storage layer's ``ExtentSpec`` (``odxtarget.storage.extent_spec``) by shape.
    """

    path: str
    offset: int = 0
    length: int | None = None  # None: the rest of the LUN's size


@dataclass(slots=True)
class RbdConfig:
    """A Ceph RBD image that stores a whole LUN (docs/rbd.md).

    It is the storage layer's ``RbdSpec`` (``odxtarget.storage.rbd``) by shape.
    """

    image: str
    pool: str = "rbd"
    conf: str = "/etc/ceph/ceph.conf"   # the cluster's monitors (and keyring, unless given)
    client: str = "admin"               # cephx user id, without "client."
    keyring: str | None = None


@dataclass(slots=True)
class BlockConfig:
    """A block device that stores a whole LUN from its first byte (docs/block.md)."""

    path: str   # the device node, e.g. /dev/vg0/lun1


@dataclass(slots=True)
class StorageObjectConfig:
    """A backstore: what a LUN shows, stored in an ordered list of file extents, in an RBD
    image (``rbd`` set, ``extents`` empty) or on a block device (``block`` set, ``extents``
    empty)."""

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
    rbd: RbdConfig | None = None
    block: BlockConfig | None = None

    def describe_storage(self) -> str:
        """Where the bytes live, for log lines and errors."""
        if self.rbd is not None:
            return f"rbd image {self.rbd.pool}/{self.rbd.image}"
        if self.block is not None:
            return f"block device {self.block.path}"
        return ", ".join(dict.fromkeys(extent.path for extent in self.extents))


@dataclass(slots=True)
class ChapConfig:
    """CHAP credentials: ``userid``/``password`` authenticate the initiator; the mutual pair
    authenticates the target to the initiator."""

    userid: str
    password: str
    mutual_userid: str | None = None
    mutual_password: str | None = None


@dataclass(slots=True)
class MappedLunConfig:
    """One LUN an ACL's initiator sees (targetcli's mapped LUN; docs/configuration.md, "ACLs")."""

    mapped_lun: int               # the number the initiator sees (REPORT LUNS, commands)
    lun: int                      # the target's LUN it shows
    write_protect: bool = False   # writes refused with DATA PROTECT, WRITE PROTECTED (27h/00h)


@dataclass(slots=True)
class AclConfig:
    initiator: str                  # initiator IQN allowed to log in
    chap: ChapConfig | None = None  # overrides the target's CHAP for this initiator
    #: LUN masking: the initiator sees exactly these. None: every LUN of the target under its
    #: own number (targetcli's auto_add_mapped_luns), following the target's LUNs live.
    mapped_luns: list[MappedLunConfig] | None = None


@dataclass(slots=True)
class PortalConfig:
    ip: str = "127.0.0.1"
    port: int = 3260


def format_portal(portal: PortalConfig) -> str:
    """``ip:port``, with an IPv6 address in brackets (RFC 3986 3.2.2)."""
    return f"[{portal.ip}]:{portal.port}" if ":" in portal.ip else f"{portal.ip}:{portal.port}"


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
    #: Demo-mode sessions (initiators no ACL names) see every LUN write-protected, like LIO's
    #: TPG attribute of the same name (docs/security.md, "Demo mode").
    demo_mode_write_protect: bool = False
    #: Accept a demo-mode target without CHAP that anyone can write to on a non-loopback
    #: portal (docs/security.md, "Demo mode"); the daemon still warns at startup.
    allow_unauthenticated_writes: bool = False
    chap: ChapConfig | None = None   # required of every initiator when set (unless its ACL sets its own)
    tpgt: int = 1
    alias: str | None = None
    #: The TPGTs of every gateway serving this target, this one's included (docs/rbd.md,
    #: "Several gateways"): each is a target port group with one port in REPORT TARGET PORT
    #: GROUPS. Empty: this gateway alone.
    port_groups: list[int] = field(default_factory=list)

    def unauthenticated_write_portals(self, writable_objects: set[str]) -> list[PortalConfig]:
        """The non-loopback portals on which any initiator may log in without CHAP and write
        (demo mode, no target CHAP, not demo-write-protected, a LUN of ``writable_objects``)."""
        if not self.demo_mode or self.chap is not None or self.demo_mode_write_protect:
            return []
        if not any(mapping.storage_object in writable_objects for mapping in self.luns):
            return []
        return [portal for portal in self.portals if not ipaddress.ip_address(portal.ip).is_loopback]

    def target_port_groups(self) -> list[int]:
        """The port groups REPORT TARGET PORT GROUPS lists, in order (SPC-4 6.37)."""
        return sorted(set(self.port_groups) | {port_group_of(self.tpgt)})


@dataclass(slots=True)
class MetricsConfig:
    """The Prometheus endpoint: ``http://ip:port/metrics`` (docs/metrics.md)."""

    ip: str = "127.0.0.1"
    port: int = 9796   # 0: any free port, logged at startup


def _limits_overrides(self) -> dict[str, int | float]:
    """The fields that are set, as ``CopyLimits(**overrides)`` keyword arguments."""
    values = ((item.name, getattr(self, item.name)) for item in dataclasses.fields(self))
    return {name: value for name, value in values if value is not None}


#: The "odx" section: one optional field per key of ``ODX_SECTION`` (the CopyLimits fields the
#: file sets), None keeping CopyLimits' default. Unset is kept apart from "set to the default"
#: so that a saved file holds only what an administrator chose.
OdxConfig = dataclasses.make_dataclass(
    "OdxConfig",
    [(key.name, key.value_type | None, field(default=None)) for key in ODX_SECTION.keys],
    namespace={
        "__module__": __name__,
        "__doc__": "Copy manager limits (``odxtarget.copy.CopyLimits`` fields); None keeps the default.",
        "limits_overrides": _limits_overrides,
    },
    slots=True,
)


@dataclass(slots=True)
class DaemonConfig:
    storage_objects: list[StorageObjectConfig] = field(default_factory=list)
    targets: list[TargetConfig] = field(default_factory=list)
    frontend: str = "native"          # "native" (asyncio iSCSI) or "lio" (kernel LIO + TCMU, docs/lio.md)
    state_dir: str = "/var/lib/odxtarget"
    schema_version: int = 1
    log_level: str = "info"
    odx: OdxConfig = field(default_factory=OdxConfig)        # the optional "odx" section
    iscsi: IscsiLimits = field(default_factory=IscsiLimits)  # the optional "iscsi" section
    metrics: MetricsConfig | None = None   # the optional "metrics" section; None: no endpoint


def port_group_of(tpgt: int) -> int:
    """A portal group's target port group and relative target port number: its TPGT, with
    TPGT 0 shown as 1 (SPC-4 reserves relative target port 0)."""
    return tpgt or 1


def resolve_extent_length(extents: list[ExtentConfig], index: int, size: int) -> int:
    """The length of extent ``index``, with an open-ended (None) last extent resolved."""
    extent = extents[index]
    if extent.length is not None:
        return extent.length
    return size - sum(e.length or 0 for e in extents[:index])
