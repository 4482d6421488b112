"""TCM-USER generic netlink events over a raw ``AF_NETLINK``/``NETLINK_GENERIC`` socket.

The kernel multicasts ADDED_DEVICE, REMOVED_DEVICE and RECONFIG_DEVICE on the "config" group
of the "TCM-USER" family. It *waits* for a reply only when some process switched on the
module-global, sticky ``SET_FEATURES(SUPP_KERN_CMD_REPLY)`` and the device's
``nl_reply_supported`` is not -1. We never send SET_FEATURES and we create our devices with
``nl_reply_supported=-1``, so a configfs write never waits for us, and a tcmu-runner on the
same host (which does switch replies on) is never answered by us: its devices stay its own
(tcmu-runner #516/#519: a second replier would abort the other's device creation).

So this module only listens. Family and group ids are resolved through nlctrl
(``CTRL_CMD_GETFAMILY``); messages are parsed as nlmsghdr + genlmsghdr + attributes (u16
length, u16 type, payload padded to 4 bytes). Receiving needs no privilege; the socket gets a
large receive buffer and is drained promptly so that bursts of device creation are not lost
(overlaybd #398).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_GENERIC = 16
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1

FAMILY_NAME = "TCM-USER"
CONFIG_GROUP = "config"
RECEIVE_BUFFER_BYTES = 4 << 20

# include/uapi/linux/target_core_user.h: enum tcmu_genl_cmd / tcmu_genl_attr
CMD_ADDED_DEVICE = 1
CMD_REMOVED_DEVICE = 2
CMD_RECONFIG_DEVICE = 3
CMD_NAMES = {CMD_ADDED_DEVICE: "added", CMD_REMOVED_DEVICE: "removed",
             CMD_RECONFIG_DEVICE: "reconfig"}
ATTR_DEVICE = 1
ATTR_MINOR = 2
ATTR_DEV_CFG = 4
ATTR_DEV_SIZE = 5
ATTR_WRITECACHE = 6
ATTR_DEVICE_ID = 8

_NLMSGHDR = struct.Struct("=IHHII")
_GENLMSGHDR = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")


class NetlinkError(Exception):
    """The TCM-USER family is not available (module not loaded) or the socket failed."""


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One TCM-USER event. ``uio`` is ``uio<minor>``; ``name`` the uio name."""

    kind: str                        # "added", "removed", "reconfig"
    name: str
    minor: int | None
    device_id: int | None
    dev_config: str | None = None    # reconfig: new dev_config
    dev_size: int | None = None      # reconfig: new size
    write_cache: bool | None = None  # reconfig: new emulate_write_cache

    @property
    def uio(self) -> str | None:
        return None if self.minor is None else f"uio{self.minor}"


def _align4(n: int) -> int:
    return (n + 3) & ~3


def pack_attr(attr_type: int, payload: bytes) -> bytes:
    header = _NLATTR.pack(_NLATTR.size + len(payload), attr_type)
    return header + payload + bytes(_align4(len(payload)) - len(payload))


def parse_attrs(data: bytes | memoryview) -> dict[int, bytes]:
    """Attributes of a netlink payload, by type (last one wins); stops at a malformed one."""
    attrs: dict[int, bytes] = {}
    offset = 0
    while offset + _NLATTR.size <= len(data):
        length, attr_type = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > len(data):
            break
        attrs[attr_type & 0x3FFF] = bytes(data[offset + _NLATTR.size:offset + length])
        offset += _align4(length)
    return attrs


def split_messages(data: bytes) -> list[tuple[int, bytes]]:
    """(nlmsg type, payload after nlmsghdr) for each message in one datagram."""
    messages = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        messages.append((msg_type, data[offset + _NLMSGHDR.size:offset + length]))
        offset += _align4(length)
    return messages


def getfamily_request(name: str, sequence: int = 1) -> bytes:
    payload = _GENLMSGHDR.pack(CTRL_CMD_GETFAMILY, 1, 0) + pack_attr(
        CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), GENL_ID_CTRL, NLM_F_REQUEST,
                          sequence, 0) + payload


def parse_family_reply(data: bytes) -> tuple[int, dict[str, int]]:
    """(family id, {multicast group name: id}) from the nlctrl reply.

    Raises:
        NetlinkError: the kernel answered with an error (ENOENT: family not registered).
    """
    for msg_type, payload in split_messages(data):
        if msg_type == NLMSG_ERROR:
            code = struct.unpack_from("=i", payload)[0]
            if code:
                raise NetlinkError(f"{FAMILY_NAME} generic netlink family: {os.strerror(-code)}"
                                   " (is target_core_user loaded?)")
            continue
        if msg_type != GENL_ID_CTRL:
            continue
        attrs = parse_attrs(payload[_GENLMSGHDR.size:])
        family_id = struct.unpack("=H", attrs[CTRL_ATTR_FAMILY_ID][:2])[0]
        groups: dict[str, int] = {}
        for group in parse_attrs(attrs.get(CTRL_ATTR_MCAST_GROUPS, b"")).values():
            fields = parse_attrs(group)
            if CTRL_ATTR_MCAST_GRP_NAME in fields and CTRL_ATTR_MCAST_GRP_ID in fields:
                groups[fields[CTRL_ATTR_MCAST_GRP_NAME].rstrip(b"\0").decode()] = struct.unpack(
                    "=I", fields[CTRL_ATTR_MCAST_GRP_ID][:4])[0]
        return family_id, groups
    raise NetlinkError("no reply to CTRL_CMD_GETFAMILY")


def parse_event(payload: bytes) -> DeviceEvent | None:
    """A TCM-USER event from a genl payload (after nlmsghdr); None for other commands."""
    command = payload[0]
    kind = CMD_NAMES.get(command)
    if kind is None:
        return None
    attrs = parse_attrs(payload[_GENLMSGHDR.size:])

    def u32(attr: int) -> int | None:
        return struct.unpack("=I", attrs[attr][:4])[0] if attr in attrs else None

    return DeviceEvent(
        kind=kind,
        name=attrs.get(ATTR_DEVICE, b"").rstrip(b"\0").decode(errors="replace"),
        minor=u32(ATTR_MINOR),
        device_id=u32(ATTR_DEVICE_ID),
        dev_config=attrs[ATTR_DEV_CFG].rstrip(b"\0").decode(errors="replace")
        if ATTR_DEV_CFG in attrs else None,
        dev_size=struct.unpack("=Q", attrs[ATTR_DEV_SIZE][:8])[0] if ATTR_DEV_SIZE in attrs else None,
        write_cache=bool(attrs[ATTR_WRITECACHE][0]) if ATTR_WRITECACHE in attrs else None,
    )


class TcmuEventSocket:
    """A non-blocking listener on the TCM-USER "config" multicast group."""

    def __init__(self) -> None:
        self.overflowed = False
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_GENERIC)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            self.sock.bind((0, 0))
            self.sock.send(getfamily_request(FAMILY_NAME))
            self.family_id, groups = parse_family_reply(self.sock.recv(65536))
            if CONFIG_GROUP not in groups:
                raise NetlinkError(f"{FAMILY_NAME} has no {CONFIG_GROUP!r} multicast group")
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, groups[CONFIG_GROUP])
            self.sock.setblocking(False)
        except OSError as error:
            self.sock.close()
            raise NetlinkError(f"TCM-USER netlink socket: {error.strerror or error}") from None
        except NetlinkError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[DeviceEvent]:
        """Every event queued now (never blocks). Sets ``overflowed`` when the kernel dropped
        events (ENOBUFS): the caller should rescan devices."""
        events = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return events
            except OSError as error:
                if error.errno != errno.ENOBUFS:
                    raise
                self.overflowed = True
                continue
            for msg_type, payload in split_messages(data):
                if msg_type == self.family_id and payload:
                    event = parse_event(payload)
                    if event is not None:
                        events.append(event)

    def close(self) -> None:
        self.sock.close()
