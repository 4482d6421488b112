"""The model back in the JSON file's shape: ``parse_config(dump_config(c)) == c``.

Optional sections appear only when they say something: ``odx`` with the limits that are set,
``iscsi`` with the limits that differ from IscsiLimits' defaults, ``metrics`` when the
endpoint is on, so that a file saved by a version without them reads the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from odxtarget.config.limit_sections import ISCSI_SECTION, ODX_SECTION, LimitSection
from odxtarget.config.model import AclConfig, ChapConfig, DaemonConfig, RbdConfig, StorageObjectConfig, TargetConfig
from odxtarget.config.vocabulary import format_size


def dump_config(config: DaemonConfig) -> dict[str, Any]:
    """The JSON object for a model; ``parse_config(dump_config(c))`` gives ``c`` back."""
    iscsi_changes = {
        item.name: getattr(config.iscsi, item.name) for item in dataclasses.fields(config.iscsi)
        if getattr(config.iscsi, item.name) != item.default
    }
    return {
        "schema_version": config.schema_version,
        "frontend": config.frontend,
        "state_dir": config.state_dir,
        "log_level": config.log_level,
        "storage_objects": [_dump_storage_object(so) for so in config.storage_objects],
        "targets": [_dump_target(target) for target in config.targets],
        **_dump_limits(ODX_SECTION, config.odx.limits_overrides()),
        **_dump_limits(ISCSI_SECTION, iscsi_changes),
        **({"metrics": {"ip": config.metrics.ip, "port": config.metrics.port}} if config.metrics else {}),
    }


def _dump_limits(section: LimitSection, values: dict[str, int | float]) -> dict[str, Any]:
    """``{section: {...}}`` with ``values`` spelled as the file spells them; nothing when empty."""
    if not values:
        return {}
    return {section.name: {name: section.key(name).spelled(value) for name, value in values.items()}}


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
        **_dump_storage(so),
    }


def _dump_storage(so: StorageObjectConfig) -> dict[str, Any]:
    """Where the bytes live: the ``rbd``, ``block`` or ``extents`` key."""
    if so.rbd is not None:
        return {"rbd": _dump_rbd(so.rbd)}
    if so.block is not None:
        return {"block": {"path": so.block.path}}
    return {"extents": [{"path": e.path, "offset": e.offset, "length": e.length} for e in so.extents]}


def _dump_rbd(rbd: RbdConfig) -> dict[str, Any]:
    return {"pool": rbd.pool, "image": rbd.image, "conf": rbd.conf, "client": rbd.client,
            **({"keyring": rbd.keyring} if rbd.keyring else {})}


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
        **({"port_groups": list(target.port_groups)} if target.port_groups else {}),
        "alias": target.alias,
        "portals": [{"ip": p.ip, "port": p.port} for p in target.portals],
        "luns": [{"lun": m.lun, "storage_object": m.storage_object} for m in target.luns],
        "demo_mode": target.demo_mode,
        **({"demo_mode_write_protect": True} if target.demo_mode_write_protect else {}),
        **({"allow_unauthenticated_writes": True} if target.allow_unauthenticated_writes else {}),
        "chap": _dump_chap(target.chap),
        "acls": [_dump_acl(acl) for acl in target.acls],
    }


def _dump_acl(acl: AclConfig) -> dict[str, Any]:
    dumped: dict[str, Any] = {"initiator": acl.initiator, "chap": _dump_chap(acl.chap)}
    if acl.mapped_luns is not None:
        dumped["mapped_luns"] = [{"mapped_lun": m.mapped_lun, "lun": m.lun, "write_protect": m.write_protect}
                                 for m in acl.mapped_luns]
    return dumped
