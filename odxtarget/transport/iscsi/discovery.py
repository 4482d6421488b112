"""SendTargets answers (RFC 7143 Appendix D, 13.3, 13.8) and who may see which target.

Theory of operation: a SendTargets text request names what the initiator wants listed:

* ``All`` -- in a discovery session, every target this initiator may access; in a normal
  session only the session's own target (Appendix D: operational sessions need only return
  the target they are connected to);
* ``<iSCSI name>`` -- that one target, if the initiator may see it (and, in a normal session,
  only if it is the session's target);
* empty -- in a normal session the session's target; in a discovery session nothing;
* anything else is neither ``All`` nor an iSCSI name: the key is answered ``Reject``
  (RFC 7143 6.2, 13.3), never with an empty list the initiator would wait on.

Each listed target is ``TargetName=<iqn>`` followed by one ``TargetAddress=<ip>:<port>,<tpgt>``
per portal (RFC 7143 13.8: IPv6 addresses in brackets). A target is visible to an initiator
when it is in demo mode or one of its ACLs names the initiator. Pure functions; the caller
encodes the pairs with ``text.encode_text``.

A target is served only through its own portals: ``PortalDirectory`` is the view of the
targets that one portal serves, and a connection that arrived on that portal can log in to
and discover those targets only (docs/security.md, "Portals").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Protocol

from odxtarget.config import AclConfig, PortalConfig, TargetConfig, iscsi_name_problem

SEND_TARGETS_ALL = "All"
SESSION_TYPE_NORMAL = "Normal"
SESSION_TYPE_DISCOVERY = "Discovery"
# Portals bound to every address: the address the initiator reached us on is reported instead.
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})


class TargetDirectory(Protocol):
    """What the login and discovery code needs to know about configured targets.

    The daemon implements it over its configuration; ``lookup`` is by exact iSCSI name.
    """

    def lookup(self, target_name: str) -> TargetConfig | None: ...

    def targets(self) -> list[TargetConfig]: ...


class PortalDirectory:
    """The targets of ``directory`` that the portal ``local_address``:``local_port`` serves."""

    def __init__(self, directory: TargetDirectory, local_address: str, local_port: int):
        self._directory = directory
        self._address = _normalized_ip(local_address)
        self._port = local_port

    def lookup(self, target_name: str) -> TargetConfig | None:
        target = self._directory.lookup(target_name)
        return target if target is not None and self.serves(target) else None

    def targets(self) -> list[TargetConfig]:
        return [target for target in self._directory.targets() if self.serves(target)]

    def serves(self, target: TargetConfig) -> bool:
        """One of the target's portals is this one: same port, and the same address or a wildcard."""
        for portal in target.portals:
            if portal.port != self._port:
                continue
            ip = portal.ip.strip()
            if ip in WILDCARD_ADDRESSES or _normalized_ip(ip) == self._address:
                return True
        return False


def _normalized_ip(address: str) -> str:
    """An IP address in one spelling: no brackets, IPv4-mapped IPv6 as IPv4, canonical text."""
    text = address.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text.lower()       # a DNS name in the configuration is compared as written
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def send_targets_value_valid(value: str) -> bool:
    """RFC 7143 13.3: the value is ``All``, an iSCSI name, or empty."""
    return value in ("", SEND_TARGETS_ALL) or iscsi_name_problem(value.casefold()) is None


def names_equal(left: str, right: str) -> bool:
    """iSCSI names compare case-insensitively (RFC 3722 stringprep maps them to lower case)."""
    return left.casefold() == right.casefold()


def matching_acl(target: TargetConfig, initiator_name: str) -> AclConfig | None:
    for acl in target.acls:
        if names_equal(acl.initiator, initiator_name):
            return acl
    return None


def initiator_may_access(target: TargetConfig, initiator_name: str) -> bool:
    """Demo-mode targets admit anyone; others only initiators named by an ACL."""
    return target.demo_mode or matching_acl(target, initiator_name) is not None


def session_write_protected(target: TargetConfig, initiator_name: str) -> bool:
    """A demo-mode session (no ACL names the initiator) of a target with
    ``demo_mode_write_protect`` sees every LUN write-protected (docs/security.md, "Demo mode")."""
    return target.demo_mode_write_protect and matching_acl(target, initiator_name) is None


def format_target_address(ip: str, port: int, portal_group_tag: int) -> str:
    """``<domainname>[:port][,tpgt]`` of RFC 7143 13.8, IPv6 literal in brackets."""
    host = ip
    if ":" in ip and not ip.startswith("["):
        host = f"[{ip}]"
    return f"{host}:{port},{portal_group_tag}"


def target_addresses(target: TargetConfig, *, local_address: str | None = None,
                     portal_group_tag: int | None = None) -> list[str]:
    """The TargetAddress values for a target, one per usable portal."""
    tag = target.tpgt if portal_group_tag is None else portal_group_tag
    addresses: list[str] = []
    for portal in target.portals:
        ip = _reportable_ip(portal, local_address)
        if ip is None:
            continue
        address = format_target_address(ip, portal.port, tag)
        if address not in addresses:
            addresses.append(address)
    return addresses


def send_targets(value: str, *, initiator_name: str, session_type: str, session_target: str | None,
                 directory: TargetDirectory, local_address: str | None = None,
                 portal_group_tag_for: Callable[[str], int] | None = None) -> list[tuple[str, str]]:
    """Answer ``SendTargets=<value>`` with TargetName/TargetAddress pairs.

    Args:
        value: "All", an iSCSI target name, or "" (see the module docstring).
        initiator_name: the session's InitiatorName (targets it may not access are never listed).
        session_type: "Normal" or "Discovery".
        session_target: the target of a normal session; None for discovery.
        directory: the configured targets.
        local_address: the IP the connection arrived on, reported for wildcard portals.
        portal_group_tag_for: TPGT per target name; default ``TargetConfig.tpgt``.
    """
    if session_type == SESSION_TYPE_NORMAL:
        if session_target is None:
            return []
        if value not in ("", SEND_TARGETS_ALL) and not names_equal(value, session_target):
            return []
        own = directory.lookup(session_target)
        candidates = [own] if own is not None else []
    elif value == SEND_TARGETS_ALL:
        candidates = list(directory.targets())
    elif value:
        found = directory.lookup(value)
        candidates = [found] if found is not None else []
    else:
        candidates = []
    pairs: list[tuple[str, str]] = []
    for target in candidates:
        if not initiator_may_access(target, initiator_name):
            continue
        tag = portal_group_tag_for(target.iqn) if portal_group_tag_for is not None else None
        pairs.append(("TargetName", target.iqn))
        pairs.extend(("TargetAddress", address)
                     for address in target_addresses(target, local_address=local_address, portal_group_tag=tag))
    return pairs


def _reportable_ip(portal: PortalConfig, local_address: str | None) -> str | None:
    ip = portal.ip.strip()
    if ip in WILDCARD_ADDRESSES:
        return local_address or None
    try:
        ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return ip  # a DNS name is a valid domainname too (RFC 7143 13.8)
    return ip.strip("[]") if ip.startswith("[") else ip
