"""LIO configuration from odxtarget's own configuration file (frontend "lio"), via rtslib-fb.

Theory of operation
-------------------
The same ``DaemonConfig`` that drives the native front end is turned into LIO objects:

* one ``user:odx`` backstore (TCMU device) per storage object, named after it, with
  ``dev_config = "odx/<storage object>"`` -- the handler maps devices to logical units by
  that string -- and these ``control`` tokens, written before ``enable``:

  - ``nl_reply_supported=-1``: the kernel never waits for a netlink reply about this device,
    whatever another daemon (tcmu-runner) switched on module-wide;
  - ``hw_max_sectors`` = our MAXIMUM TRANSFER LENGTH (VPD B0h) instead of LIO's 128 sectors,
    and ``hw_block_size`` = the LU's block size, so LIO and our INQUIRY data agree;
  - ``max_data_area_mb``: room for a full queue of large commands (pages are allocated
    lazily, so this is a ceiling, not a reservation);

  then ``attrib/cmd_time_out`` and ``qfull_time_out`` (commands on the ring of a dead
  handler fail after this, so nothing waits forever) and ``tmr_notification=1``;
* one iSCSI target per configured target: TPG with its tag, portals, LUNs, ACLs with their mapped
  LUNs (the ACL's ``mapped_luns``, else every LUN under its own number), demo mode
  (``generate_node_acls``) and CHAP (per ACL, or TPG-wide for demo mode).

``apply`` is idempotent and keeps what already matches: after a crash the LIO objects are
still there, initiators stay logged in, and the restarted handler recovers the rings. A
backstore whose config or size differs is recreated. ``remove`` deletes the targets of the
configuration and every ``user:odx`` backstore.

rtslib is imported lazily so the module can be imported (and its pure parts tested) where
rtslib-fb or configfs is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from odxtarget.config import ChapConfig, DaemonConfig, StorageObjectConfig, TargetConfig
from odxtarget.scsi.lu import MAX_TRANSFER_BYTES, derive_serial  # the core's MAXIMUM TRANSFER LENGTH
from odxtarget.transport.tcmu.device import SUBTYPE

log = logging.getLogger(__name__)

#: Data area per device: 16 commands of the maximum size in flight.
MAX_DATA_AREA_MB = 256
#: Seconds a command may sit on the ring of an absent handler before LIO fails it.
CMD_TIME_OUT_SECONDS = 30
#: Seconds a command may wait for ring/data space before TASK SET FULL.
QFULL_TIME_OUT_SECONDS = 30
#: LIO's TPG CmdSN window; TCMU's hw_queue_depth is 128 (tcmu-runner #359: keep them equal).
DEFAULT_CMDSN_DEPTH = 128


class LioConfigError(Exception):
    """LIO cannot be configured (configfs, module or rtslib missing, or a refused write)."""


@dataclass(frozen=True, slots=True)
class BackstoreSpec:
    """What one storage object becomes in LIO."""

    name: str
    config: str
    size: int
    block_size: int
    hw_max_sectors: int
    serial: str

    @property
    def control(self) -> str:
        return ",".join([
            "nl_reply_supported=-1",
            f"hw_block_size={self.block_size}",
            f"max_data_area_mb={MAX_DATA_AREA_MB}",
        ])


def backstore_spec(so: StorageObjectConfig) -> BackstoreSpec:
    return BackstoreSpec(
        name=so.name,
        config=f"{SUBTYPE}/{so.name}",
        size=so.size,
        block_size=so.block_size,
        hw_max_sectors=MAX_TRANSFER_BYTES // so.block_size,
        serial=so.serial or derive_serial(so.name),
    )


def _rtslib():
    try:
        import rtslib_fb
    except ImportError as error:
        raise LioConfigError(f"rtslib-fb is not installed ({error}); "
                             "install odxtarget[lio]") from None
    return rtslib_fb


def not_in_configfs_error(rtslib) -> type[Exception]:
    """rtslib-fb's "no such object in configfs" exception: ``RTSLibNotInCFSError`` from 2.2,
    ``RTSLibNotInCFS`` before (Debian 12's python3-rtslib-fb is 2.1.75)."""
    try:
        return rtslib.RTSLibNotInCFSError
    except AttributeError:
        return rtslib.RTSLibNotInCFS


class LioConfigurator:
    """Creates, reconciles and removes the LIO objects of one ``DaemonConfig``."""

    def __init__(self, config: DaemonConfig):
        self.config = config
        self.specs = {so.name: backstore_spec(so) for so in config.storage_objects}

    # -- apply ------------------------------------------------------------------------------

    def apply(self) -> None:
        """Make LIO match the configuration (create what is missing, keep what matches).

        Raises:
            LioConfigError: naming the object that could not be configured.
        """
        rtslib = _rtslib()
        try:
            rtslib.RTSRoot()    # mounts configfs and loads target_core_mod when needed
            backstores = {name: self._backstore(rtslib, spec) for name, spec in self.specs.items()}
            self._remove_stale_backstores(rtslib)
            iscsi = rtslib.FabricModule("iscsi")
            for target in self.config.targets:
                self._target(rtslib, iscsi, target, backstores)
        except (rtslib.RTSLibError, OSError) as error:
            raise LioConfigError(f"LIO configuration failed: {error}") from None

    def _backstore(self, rtslib, spec: BackstoreSpec):
        cls = rtslib.UserBackedStorageObject
        try:
            existing = cls(spec.name)
        except not_in_configfs_error(rtslib):
            existing = None
        if existing is not None:
            if existing.config == spec.config and existing.size == spec.size:
                log.info("LIO backstore user:%s exists; kept", spec.name)
                return existing
            log.warning("LIO backstore user:%s has config %r size %s; recreating it",
                        spec.name, existing.config, existing.size)
            existing.delete()
        so = cls(spec.name, config=spec.config, size=spec.size, wwn=spec.serial,
                 hw_max_sectors=spec.hw_max_sectors, control=spec.control)
        for attribute, value in (("cmd_time_out", CMD_TIME_OUT_SECONDS),
                                 ("qfull_time_out", QFULL_TIME_OUT_SECONDS),
                                 ("tmr_notification", 1)):
            try:
                so.set_attribute(attribute, str(value))
            except rtslib.RTSLibError as error:   # older kernels lack some of them
                log.warning("user:%s: cannot set %s: %s", spec.name, attribute, error)
        log.info("LIO backstore user:%s created (%s, %d bytes)", spec.name, spec.config, spec.size)
        return so

    def _remove_stale_backstores(self, rtslib) -> None:
        for so in list(rtslib.RTSRoot().storage_objects):
            if (isinstance(so, rtslib.UserBackedStorageObject) and so.name not in self.specs
                    and (so.config or "").startswith(SUBTYPE + "/")):
                log.info("removing stale LIO backstore user:%s", so.name)
                so.delete()

    def _target(self, rtslib, iscsi, config: TargetConfig, backstores: dict[str, Any]) -> None:
        target = rtslib.Target(iscsi, config.iqn)
        tpg = rtslib.TPG(target, config.tpgt)
        chap_everywhere = config.chap is not None or any(acl.chap for acl in config.acls)
        for attribute, value in (
            ("authentication", "1" if chap_everywhere else "0"),
            ("generate_node_acls", "1" if config.demo_mode else "0"),
            ("demo_mode_write_protect", "1" if config.demo_mode_write_protect else "0"),
            ("cache_dynamic_acls", "1" if config.demo_mode else "0"),
            ("default_cmdsn_depth", str(DEFAULT_CMDSN_DEPTH)),
        ):
            tpg.set_attribute(attribute, value)
        if config.demo_mode and config.chap is not None:
            _set_chap(tpg, config.chap)
        existing_portals = {(p.ip_address, p.port) for p in tpg.network_portals}
        for portal in config.portals:
            if (portal.ip, portal.port) not in existing_portals:
                rtslib.NetworkPortal(tpg, portal.ip, portal.port)
        luns = {}
        existing_luns = {lun.lun: lun for lun in tpg.luns}
        for mapping in config.luns:
            so = backstores[mapping.storage_object]
            lun = existing_luns.get(mapping.lun)
            if lun is not None and lun.storage_object != so:
                lun.delete()
                lun = None
            luns[mapping.lun] = lun or rtslib.LUN(tpg, mapping.lun, so)
        for acl in config.acls:
            node_acl = rtslib.NodeACL(tpg, acl.initiator)
            chap = acl.chap or config.chap
            if chap is not None:
                _set_chap(node_acl, chap)
            mapped = {m.mapped_lun for m in node_acl.mapped_luns}
            shown = ({m.mapped_lun: (m.lun, m.write_protect) for m in acl.mapped_luns}
                     if acl.mapped_luns is not None else {number: (number, False) for number in luns})
            for number, (lun, write_protect) in shown.items():
                if number not in mapped:
                    rtslib.MappedLUN(node_acl, number, luns[lun], write_protect=write_protect)
        tpg.enable = True
        log.info("LIO target %s tpgt %d: %d LUNs, %d portals", config.iqn, config.tpgt,
                 len(luns), len(config.portals))

    # -- remove -----------------------------------------------------------------------------

    def remove(self) -> None:
        """Delete the configuration's iSCSI targets and every ``user:odx`` backstore."""
        rtslib = _rtslib()
        try:
            iscsi = rtslib.FabricModule("iscsi")
            for config in self.config.targets:
                try:
                    rtslib.Target(iscsi, config.iqn, mode="lookup").delete()
                except not_in_configfs_error(rtslib):
                    pass
            for so in list(rtslib.RTSRoot().storage_objects):
                if (isinstance(so, rtslib.UserBackedStorageObject)
                        and (so.config or "").startswith(SUBTYPE + "/")):
                    so.delete()
        except (rtslib.RTSLibError, OSError) as error:
            raise LioConfigError(f"LIO clean-up failed: {error}") from None


def _set_chap(node: Any, chap: ChapConfig) -> None:
    node.chap_userid = chap.userid
    node.chap_password = chap.password
    if chap.mutual_userid is not None:
        node.chap_mutual_userid = chap.mutual_userid
        node.chap_mutual_password = chap.mutual_password
