"""targetcli's saved configuration (``/etc/target/saveconfig.json``, rtslib-fb's ``RTSRoot.dump``)
turned into an odxtarget configuration document (docs/migrating.md).

Theory of operation
-------------------
``import_saveconfig`` walks the saved storage objects, then the iSCSI targets, and builds the
JSON document ``odxtarget.config.parse_config`` reads. What has an equivalent is mapped (the
table in docs/migrating.md); everything else becomes one line in ``ImportResult.differences``:
settings that are not imported, and settings imported with different behaviour. Nothing is
dropped without a line. Where LIO's rule and odxtarget's differ, the import never opens access:
CHAP credentials are kept even where LIO made them optional, and an ACL or demo mode whose
logins LIO refused is left out rather than opened.

Identity: an imported LU answers INQUIRY VPD 80h and 83h as LIO did. LIO's unit serial (the
storage object's ``wwn`` in the saved file) becomes ``serial``, and ``wwn`` is LIO's NAA
IEEE Registered Extended designator built from it (``lio_naa_designator``), so initiators
(Windows disk and cluster identity, multipath WWIDs) see the same device.

The input is a decoded JSON object from a file an administrator names; a shape that is not
rtslib's raises ``TargetcliImportError`` with the JSON path at fault.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from odxtarget.config.vocabulary import (
    BLOCK_SIZES,
    MAX_CHAP_NAME_BYTES,
    MAX_LUN,
    MAX_SERIAL_CHARS,
    MAX_TPGT,
    MIN_CHAP_SECRET_BYTES,
    SCHEMA_VERSION,
    SERIAL,
    STORAGE_NAME,
    format_size,
    iscsi_name_problem,
)

#: The IEEE company ID LIO puts in its NAA designators unless ``wwn/company_id`` is set
#: (drivers/target/target_core_device.c: 0x001405).
LIO_COMPANY_ID = 0x001405
#: Hex digits of the unit serial an NAA IEEE Registered Extended designator holds: 36 bits of
#: VENDOR SPECIFIC IDENTIFIER after the 24-bit company ID, then 64 bits of extension (SPC-4
#: 7.8.6.6.5) = 100 bits.
LIO_NAA_SERIAL_DIGITS = 25
#: The ALUA target port group every LIO LUN is in unless the administrator made others.
LIO_DEFAULT_ALUA_GROUP = "default_tg_pt_gp"

#: Storage object attributes odxtarget behaves like when they have these values; any other
#: value is reported (LIO's defaults, drivers/target/target_core_base.h DA_*).
STORAGE_ATTRIBUTE_BEHAVIOUR = {
    "emulate_3pc": 1, "emulate_caw": 1, "emulate_pr": 1, "pgr_support": 1, "alua_support": 1,
    "emulate_dpo": 1, "emulate_fua_read": 1, "emulate_fua_write": 1, "emulate_tas": 1,
    "emulate_ua_intlck_ctrl": 0, "emulate_rest_reord": 0, "enforce_pr_isids": 1, "force_pr_aptpl": 0,
    "is_nonrot": 0, "pi_prot_type": 0, "pi_prot_format": 0, "pi_prot_verify": 0,
}
#: Storage object attributes odxtarget decides itself (limits it derives from its storage,
#: thin provisioning it always offers, its own INQUIRY product): never reported.
STORAGE_ATTRIBUTES_OWN = frozenset({
    "emulate_model_alias", "emulate_tpu", "emulate_tpws", "unmap_zeroes_data", "max_unmap_lba_count",
    "max_unmap_block_desc_count", "max_write_same_len", "optimal_sectors", "queue_depth",
    "unmap_granularity", "unmap_granularity_alignment", "submit_type", "complete_type",
})
#: Storage object attributes the import maps.
STORAGE_ATTRIBUTES_MAPPED = frozenset({"block_size", "emulate_write_cache"})

#: TPG attributes odxtarget behaves like with these values (iscsi_target_core.h TA_*).
TPG_ATTRIBUTE_BEHAVIOUR = {
    "demo_mode_discovery": 1, "default_erl": 0, "t10_pi": 0, "fabric_prot_type": 0,
    "tpg_enabled_sendtargets": 1,
}
#: TPG attributes odxtarget sets itself (daemon-wide "iscsi" section): never reported.
TPG_ATTRIBUTES_OWN = frozenset({
    "cache_dynamic_acls", "default_cmdsn_depth", "login_timeout", "netif_timeout", "login_keys_workaround",
})
TPG_ATTRIBUTES_MAPPED = frozenset({
    "authentication", "generate_node_acls", "demo_mode_write_protect", "prod_mode_write_protect",
})
#: Login keys LIO offers by default (iscsi_target_parameters.h INITIAL_*): odxtarget negotiates
#: the same or better on its own; a TPG that changed one is reported.
TPG_PARAMETER_DEFAULTS = {
    "DataDigest": "CRC32C,None", "HeaderDigest": "CRC32C,None", "DataPDUInOrder": "Yes",
    "DataSequenceInOrder": "Yes", "DefaultTime2Retain": "20", "DefaultTime2Wait": "2", "ErrorRecoveryLevel": "0",
    "FirstBurstLength": "65536", "IFMarker": "No", "ImmediateData": "Yes",
    "InitialR2T": "Yes", "MaxBurstLength": "262144", "MaxConnections": "1", "MaxOutstandingR2T": "1",
    "MaxRecvDataSegmentLength": "8192", "MaxXmitDataSegmentLength": "262144",
    "OFMarker": "No", "RDMAExtensions": "No", "InitiatorRecvDataSegmentLength": "262144",
    "TargetRecvDataSegmentLength": "8192",
}
#: Login keys that say nothing while markers are off (RFC 7143 removed markers; LIO saves
#: "Reject" or a range for them): never reported.
TPG_PARAMETERS_OWN = frozenset({"IFMarkInt", "OFMarkInt", "TargetAlias"})
#: Node ACL attributes: odxtarget's behaviour, and what it sets itself.
ACL_ATTRIBUTE_BEHAVIOUR = {
    "default_erl": 0, "random_datain_pdu_offsets": 0, "random_datain_seq_offsets": 0, "random_r2t_offsets": 0,
}
ACL_ATTRIBUTES_OWN = frozenset({
    "dataout_timeout", "dataout_timeout_retries", "nopin_response_timeout", "nopin_timeout",
})
CHAP_KEYS = ("userid", "password", "mutual_userid", "mutual_password")
LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class TargetcliImportError(Exception):
    """The input is not a targetcli saved configuration; the message names the JSON path."""


@dataclass(slots=True)
class ImportResult:
    #: The odxtarget configuration document (docs/configuration.md).
    config: dict[str, Any]
    #: One line per setting not imported or imported with different behaviour, in input order.
    differences: list[str] = field(default_factory=list)


def lio_naa_designator(unit_serial: str, company_id: int = LIO_COMPANY_ID) -> str:
    """LIO's VPD 83h NAA designator for a device with this unit serial, as 32 hex digits: NAA 6h,
    the 24-bit company ID, then the first 25 hex digits of the serial (other characters
    skipped), zero-filled (target_core_spc.c, spc_gen_naa_6h_vendor_specific)."""
    nibbles = [6, *((company_id >> shift) & 0xF for shift in range(20, -4, -4))]
    nibbles += [int(char, 16) for char in unit_serial if char in "0123456789abcdefABCDEF"][:LIO_NAA_SERIAL_DIGITS]
    nibbles += [0] * (32 - len(nibbles))
    return "".join(f"{nibble:x}" for nibble in nibbles)


def import_saveconfig(saved: Any) -> ImportResult:
    """The odxtarget configuration for a decoded saveconfig.json (see the module docstring).

    Raises:
        TargetcliImportError: ``saved`` does not have rtslib's shape.
    """
    return _Importer().run(saved)


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TargetcliImportError(f"{path}: expected an object")
    return value


def _list(owner: dict[str, Any], key: str, path: str) -> list[Any]:
    value = owner.get(key, [])
    if not isinstance(value, list):
        raise TargetcliImportError(f"{path}.{key}: expected an array")
    return value


def _text(owner: dict[str, Any], key: str, path: str) -> str:
    value = owner.get(key)
    if not isinstance(value, str) or not value:
        raise TargetcliImportError(f"{path}.{key}: expected a string")
    return value


def _number(owner: dict[str, Any], key: str, path: str) -> int:
    value = owner.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TargetcliImportError(f"{path}.{key}: expected an integer")
    return value


def _flag(value: Any) -> bool:
    """An rtslib boolean: JSON true/false, or an attribute's 0/1."""
    return bool(value) and value != "0"


@dataclass(slots=True)
class _Lun:
    """A TPG LUN that was imported: its number and the storage object it shows."""

    lun: int
    storage_object: str


class _Importer:
    def __init__(self) -> None:
        self.differences: list[str] = []
        #: "/backstores/<plugin>/<name>" -> the imported storage object's name.
        self.backstores: dict[str, str] = {}
        self.writable: set[str] = set()
        self.serials: set[str | None] = set()
        self.designators: set[str | None] = set()

    def report(self, where: str, what: str) -> None:
        self.differences.append(f"{where}: {what}")

    def run(self, saved: Any) -> ImportResult:
        root = _object(saved, "(top level)")
        storage_objects = [so for index, item in enumerate(_list(root, "storage_objects", "(top level)"))
                           if (so := self.storage_object(_object(item, f"storage_objects[{index}]"),
                                                         f"storage_objects[{index}]")) is not None]
        targets: list[dict[str, Any]] = []
        for index, item in enumerate(_list(root, "targets", "(top level)")):
            targets.extend(self.target(_object(item, f"targets[{index}]"), f"targets[{index}]"))
        for index, item in enumerate(_list(root, "fabric_modules", "(top level)")):
            module = _object(item, f"fabric_modules[{index}]")
            if _flag(module.get("discovery_enable_auth")):
                self.report(f"fabric {module.get('name', '?')}", "discovery CHAP is not imported: odxtarget's"
                            " discovery sessions need no authentication and list only the targets each"
                            " initiator may log in to")
        config = {
            "schema_version": SCHEMA_VERSION,
            "frontend": "native",
            "state_dir": "/var/lib/odxtarget",
            "log_level": "info",
            "storage_objects": storage_objects,
            "targets": targets,
        }
        return ImportResult(config, self.differences)

    # -- storage objects ----------------------------------------------------------------------

    def storage_object(self, item: dict[str, Any], path: str) -> dict[str, Any] | None:
        plugin = _text(item, "plugin", path)
        name = _text(item, "name", path)
        where = f"backstore {plugin}/{name}"
        if plugin not in ("fileio", "block"):
            hint = {
                "ramdisk": "its data lives in kernel memory only",
                "pscsi": "odxtarget emulates block devices, it does not pass SCSI commands through",
                "user": ("a tcmu-runner RBD image, which odxtarget serves itself with an rbd storage object,"
                         " docs/rbd.md" if str(item.get("config", "")).startswith("rbd/")
                         else "a tcmu-runner handler"),
            }.get(plugin, "an unknown backstore type")
            self.report(where, f"not imported ({hint}); LUNs showing it are left out")
            return None
        attributes = _object(item.get("attributes", {}), f"{path}.attributes")
        block_size = attributes.get("block_size", 512)
        if block_size not in BLOCK_SIZES:
            self.report(where, f"not imported: block_size {block_size} (odxtarget serves 512 or 4096)")
            return None
        dev = _text(item, "dev", path)
        size = None
        if plugin == "fileio" and not _is_block_device(dev):
            size = _number(item, "size", path) // block_size * block_size
            if size == 0:
                self.report(where, f"not imported: size {item['size']} is less than one {block_size}-byte block")
                return None
        imported_name = self.unique_name(name, plugin, where)
        self.backstores[f"/backstores/{plugin}/{name}"] = imported_name
        so: dict[str, Any] = {"name": imported_name}
        if size is not None:
            so["size"] = format_size(size)
        so["block_size"] = block_size
        read_only = plugin == "block" and _flag(item.get("readonly"))
        so["read_only"] = read_only
        if not read_only:
            self.writable.add(imported_name)
        so.update(self.identity(item.get("wwn"), where))
        so["write_cache"] = _flag(item.get("write_back", attributes.get("emulate_write_cache", 0)))
        if "size" in so:
            so["extents"] = [{"path": dev, "offset": 0, "length": None}]
        else:
            so["block"] = {"path": dev}
        self.check_attributes(where, attributes, STORAGE_ATTRIBUTES_MAPPED, STORAGE_ATTRIBUTE_BEHAVIOUR,
                              STORAGE_ATTRIBUTES_OWN)
        for group in item.get("alua_tpgs", []) or []:
            if isinstance(group, dict) and group.get("name", LIO_DEFAULT_ALUA_GROUP) != LIO_DEFAULT_ALUA_GROUP:
                self.report(where, f"ALUA target port group {group['name']!r} is not imported: odxtarget"
                            " reports one active/optimized group per gateway (docs/rbd.md)")
        return so

    def unique_name(self, name: str, plugin: str, where: str) -> str:
        """An odxtarget storage object name for a LIO one: invalid characters become "-", and a
        name another backstore type already uses gets the type appended."""
        candidate = re.sub(r"[^A-Za-z0-9_.-]", "-", name).lstrip("_.-")[:64] or plugin
        if candidate in self.backstores.values():
            candidate = f"{candidate[:64 - len(plugin) - 1]}-{plugin}"
        if not STORAGE_NAME.fullmatch(candidate) or candidate in self.backstores.values():
            candidate = f"{plugin}{len(self.backstores)}"
        if candidate != name:
            self.report(where, f'imported as storage object "{candidate}"')
        return candidate

    def identity(self, wwn: Any, where: str) -> dict[str, Any]:
        """``serial`` and ``wwn`` that make VPD 80h and 83h answer as LIO did."""
        if not isinstance(wwn, str) or not wwn:
            self.report(where, "has no unit serial: odxtarget derives the LU's identity from its name,"
                        " so initiators see a new device")
            return {"serial": None, "wwn": None}
        serial: str | None = wwn
        if len(wwn) > MAX_SERIAL_CHARS or not SERIAL.fullmatch(wwn):
            self.report(where, f"unit serial {wwn!r} is not kept for VPD 80h (odxtarget takes 1 to"
                        f" {MAX_SERIAL_CHARS} printable characters without spaces); the NAA designator is")
            serial = None
        elif serial in self.serials:
            self.report(where, f"unit serial {wwn!r} is also another backstore's: odxtarget derives this"
                        " LU's VPD 80h serial from its name")
            serial = None
        naa = lio_naa_designator(wwn)
        if naa in self.designators:
            self.report(where, f"its NAA designator {naa} is also another backstore's (the first"
                        f" {LIO_NAA_SERIAL_DIGITS} hex digits of their unit serials match): odxtarget derives"
                        " this LU's from its serial, so initiators see a new device")
            naa = None
        self.serials.add(serial)
        self.designators.add(naa)
        return {"serial": serial, "wwn": naa}

    def check_attributes(self, where: str, attributes: dict[str, Any], mapped: frozenset[str],
                         behaviour: dict[str, Any], own: frozenset[str]) -> None:
        """Report every attribute whose value odxtarget would not honour."""
        for key, value in attributes.items():
            if key in mapped or key in own:
                continue
            if key not in behaviour:
                self.report(where, f"attribute {key}={value} is not imported (odxtarget has no such setting)")
            elif value != behaviour[key]:
                self.report(where, f"attribute {key}={value} is not imported (odxtarget behaves as"
                            f" {key}={behaviour[key]})")

    # -- targets --------------------------------------------------------------------------------

    def target(self, item: dict[str, Any], path: str) -> list[dict[str, Any]]:
        fabric = item.get("fabric", "iscsi")
        wwn = _text(item, "wwn", path)
        where = f"target {wwn}"
        if fabric != "iscsi":
            self.report(where, f"not imported: fabric {fabric} (odxtarget serves iSCSI only)")
            return []
        iqn = wwn.lower() if wwn.lower().startswith("iqn.") else wwn
        problem = iscsi_name_problem(iqn)
        if problem is not None:
            self.report(where, f"not imported: the name {problem}")
            return []
        if iqn != wwn:
            self.report(where, f"imported as {iqn} (iqn names are lowercase, RFC 3720 3.2.6.1)")
        tpgs = [(_object(tpg, f"{path}.tpgs[{index}]"), f"{path}.tpgs[{index}]")
                for index, tpg in enumerate(_list(item, "tpgs", path))]
        if not tpgs:
            self.report(where, "not imported: it has no TPG, so LIO served it nowhere")
            return []
        enabled = []
        for tpg, tpg_path in tpgs:
            tag = _number(tpg, "tag", tpg_path)
            if not _flag(tpg.get("enable", True)):
                self.report(f"{where} tpg {tag}", "not imported: disabled in LIO")
            else:
                enabled.append((tag, tpg, tpg_path))
        enabled.sort(key=lambda entry: entry[0])
        for tag, _, _ in enabled[1:]:
            self.report(f"{where} tpg {tag}", f"not imported: odxtarget serves one TPG per target (tpg"
                        f" {enabled[0][0]} is imported); move its portals, LUNs and ACLs there")
        if not enabled:
            return []
        tag, tpg, tpg_path = enabled[0]
        return [self.tpg(iqn, tag, tpg, tpg_path, f"{where} tpg {tag}")]

    def tpg(self, iqn: str, tag: int, tpg: dict[str, Any], path: str, where: str) -> dict[str, Any]:
        attributes = _object(tpg.get("attributes", {}), f"{path}.attributes")
        parameters = _object(tpg.get("parameters", {}), f"{path}.parameters")
        self.check_attributes(where, attributes, TPG_ATTRIBUTES_MAPPED, TPG_ATTRIBUTE_BEHAVIOUR, TPG_ATTRIBUTES_OWN)
        self.check_parameters(where, parameters)
        if not 0 <= tag <= MAX_TPGT:
            raise TargetcliImportError(f"{path}.tag: {tag} is not a TPGT (0 to {MAX_TPGT})")
        authentication = _flag(attributes.get("authentication", 1))
        demo_mode = _flag(attributes.get("generate_node_acls", 0))
        demo_write_protect = _flag(attributes.get("demo_mode_write_protect", 1))
        production_write_protect = _flag(attributes.get("prod_mode_write_protect", 0))
        portals = self.portals(tpg, path, where)
        luns = self.luns(tpg, path, where)
        acls = [acl for index, entry in enumerate(_list(tpg, "node_acls", path))
                if (acl := self.acl(_object(entry, f"{path}.node_acls[{index}]"), f"{path}.node_acls[{index}]",
                                    where, luns, authentication, production_write_protect)) is not None]
        chap = self.tpg_chap(tpg, where, demo_mode, authentication)
        if demo_mode and chap is None and (authentication or self.credentials(tpg) is not None):
            self.report(where, "demo mode is not imported: logins no ACL names would need TPG CHAP"
                        " credentials that odxtarget can use, and there are none")
            demo_mode = False
        target: dict[str, Any] = {
            "iqn": iqn,
            "tpgt": tag,
            "alias": parameters.get("TargetAlias") or None,
            "portals": portals,
            "luns": [{"lun": lun.lun, "storage_object": lun.storage_object} for lun in luns],
            "demo_mode": demo_mode,
            "demo_mode_write_protect": demo_write_protect,
            "chap": chap,
            "acls": acls,
        }
        writable = any(lun.storage_object in self.writable for lun in luns)
        if demo_mode and chap is None and not demo_write_protect and writable and not all(
                _is_loopback(p["ip"]) for p in portals):
            target["allow_unauthenticated_writes"] = True
            self.report(where, "LIO let any initiator write without CHAP (demo mode,"
                        " demo_mode_write_protect=0): kept with allow_unauthenticated_writes"
                        " (docs/security.md)")
        return target

    def check_parameters(self, where: str, parameters: dict[str, Any]) -> None:
        for key, value in parameters.items():
            if key in TPG_PARAMETERS_OWN:
                continue
            if key == "AuthMethod":
                if "CHAP" not in str(value).split(","):
                    self.report(where, f"parameter AuthMethod={value} is not imported: odxtarget uses CHAP"
                                " wherever credentials are set")
                continue
            default = TPG_PARAMETER_DEFAULTS.get(key)
            if default is None:
                self.report(where, f"parameter {key}={value} is not imported (odxtarget has no such setting)")
            elif str(value) != default:
                self.report(where, f"parameter {key}={value} is not imported (odxtarget negotiates its own;"
                            f" LIO's default is {default})")

    def portals(self, tpg: dict[str, Any], path: str, where: str) -> list[dict[str, Any]]:
        portals: list[dict[str, Any]] = []
        for index, entry in enumerate(_list(tpg, "portals", path)):
            portal = _object(entry, f"{path}.portals[{index}]")
            address = _text(portal, "ip_address", f"{path}.portals[{index}]").strip("[]")
            port = _number(portal, "port", f"{path}.portals[{index}]")
            try:
                address = str(ipaddress.ip_address(address))
            except ValueError:
                self.report(where, f"portal {address}:{port} is not imported: not an IP address")
                continue
            label = f"portal {address}:{port}"
            if _flag(portal.get("iser")):
                self.report(where, f"{label}: iSER is not imported (odxtarget serves iSCSI over TCP there)")
            if _flag(portal.get("offload")):
                self.report(where, f"{label}: hardware offload is not imported (odxtarget serves iSCSI over"
                            " TCP there)")
            if {"ip": address, "port": port} not in portals:
                portals.append({"ip": address, "port": port})
        if not portals:
            self.report(where, "has no portal: LIO served it nowhere; odxtarget listens on 127.0.0.1:3260")
            portals.append({"ip": "127.0.0.1", "port": 3260})
        return portals

    def luns(self, tpg: dict[str, Any], path: str, where: str) -> list[_Lun]:
        luns: list[_Lun] = []
        for index, entry in enumerate(_list(tpg, "luns", path)):
            lun_path = f"{path}.luns[{index}]"
            lun = _object(entry, lun_path)
            number = _number(lun, "index", lun_path)
            backstore = _text(lun, "storage_object", lun_path)
            name = self.backstores.get(backstore)
            if name is None:
                self.report(where, f"LUN {number} is not imported: it shows {backstore}, which is not")
                continue
            if number > MAX_LUN:
                self.report(where, f"LUN {number} is not imported: odxtarget's LUNs go up to {MAX_LUN}")
                continue
            shown = next((other for other in luns if other.storage_object == name), None)
            if shown is not None:
                self.report(where, f"LUN {number} is not imported: {backstore} is already LUN {shown.lun}"
                            " (odxtarget shows a storage object once per target)")
                continue
            group = lun.get("alua_tg_pt_gp_name") or LIO_DEFAULT_ALUA_GROUP
            if group != LIO_DEFAULT_ALUA_GROUP:
                self.report(where, f"LUN {number}: ALUA group {group!r} is not imported")
            luns.append(_Lun(number, name))
        return luns

    # -- ACLs and CHAP ---------------------------------------------------------------------------

    @staticmethod
    def credentials(owner: dict[str, Any]) -> dict[str, str] | None:
        """The ``chap_*`` keys rtslib saves for a TPG or node ACL, as odxtarget's chap object."""
        chap = {key: owner[f"chap_{key}"] for key in CHAP_KEYS
                if isinstance(owner.get(f"chap_{key}"), str) and owner[f"chap_{key}"]}
        return chap or None

    def usable_chap(self, chap: dict[str, str], where: str) -> bool:
        """Credentials odxtarget accepts; a line for each reason it does not (RFC 7143 9.2.1)."""
        problems = []
        if "userid" not in chap or "password" not in chap:
            problems.append("one-way CHAP needs both a userid and a password")
        for key in ("password", "mutual_password"):
            if key in chap and len(chap[key].encode()) < MIN_CHAP_SECRET_BYTES:
                problems.append(f"its {key} is shorter than {MIN_CHAP_SECRET_BYTES} bytes (RFC 7143 9.2.1)")
        for key in ("userid", "mutual_userid"):
            if key in chap and len(chap[key].encode()) > MAX_CHAP_NAME_BYTES:
                problems.append(f"its {key} is longer than {MAX_CHAP_NAME_BYTES} bytes")
        if ("mutual_userid" in chap) != ("mutual_password" in chap):
            problems.append("mutual CHAP needs both a mutual_userid and a mutual_password")
        if "password" in chap and chap["password"] == chap.get("mutual_password"):
            problems.append("its mutual_password equals its password (RFC 7143 9.2.1)")
        for problem in problems:
            self.report(where, f"CHAP credentials not usable: {problem}")
        return not problems

    def tpg_chap(self, tpg: dict[str, Any], where: str, demo_mode: bool, authentication: bool) -> dict | None:
        """The target's CHAP: LIO's TPG credentials, which it asks of demo-mode logins."""
        chap = self.credentials(tpg)
        if chap is None:
            return None
        if not demo_mode:
            self.report(where, "TPG CHAP credentials are not imported: LIO asks them only in demo mode,"
                        " which is off")
            return None
        if not self.usable_chap(chap, where):
            return None
        if not authentication:
            self.report(where, "authentication=0 let demo-mode initiators skip CHAP; odxtarget requires the"
                        " imported TPG credentials")
        return chap

    def acl(self, acl: dict[str, Any], path: str, where: str, luns: list[_Lun], authentication: bool,
            production_write_protect: bool) -> dict[str, Any] | None:
        initiator = _text(acl, "node_wwn", path)
        name = initiator.lower() if initiator.lower().startswith("iqn.") else initiator
        acl_where = f"{where} acl {initiator}"
        problem = iscsi_name_problem(name)
        if problem is not None:
            self.report(acl_where, f"not imported: the name {problem}")
            return None
        if name != initiator:
            self.report(acl_where, f"imported as {name} (iqn names are lowercase, RFC 3720 3.2.6.1)")
        chap = self.credentials(acl)
        if chap is not None and not self.usable_chap(chap, acl_where):
            self.report(acl_where, "not imported: its logins would need credentials odxtarget refuses")
            return None
        if chap is None and authentication:
            self.report(acl_where, "not imported: authentication=1 and no CHAP credentials, so LIO refused"
                        " its logins")
            return None
        if chap is not None and not authentication:
            self.report(acl_where, "authentication=0 let it skip CHAP; odxtarget requires the imported"
                        " credentials")
        self.check_attributes(acl_where, _object(acl.get("attributes", {}), f"{path}.attributes"),
                              frozenset(), ACL_ATTRIBUTE_BEHAVIOUR, ACL_ATTRIBUTES_OWN)
        by_number = {lun.lun: lun for lun in luns}
        mapped: list[dict[str, Any]] = []
        for index, entry in enumerate(_list(acl, "mapped_luns", path)):
            entry_path = f"{path}.mapped_luns[{index}]"
            item = _object(entry, entry_path)
            number = _number(item, "index", entry_path)
            tpg_lun = _number(item, "tpg_lun", entry_path)
            if tpg_lun not in by_number:
                self.report(acl_where, f"mapped LUN {number} is not imported: TPG LUN {tpg_lun} is not")
                continue
            if number > MAX_LUN:
                self.report(acl_where, f"mapped LUN {number} is not imported: odxtarget's LUNs go up to {MAX_LUN}")
                continue
            mapped.append({"mapped_lun": number, "lun": tpg_lun,
                           "write_protect": _flag(item.get("write_protect")) or production_write_protect})
        entry: dict[str, Any] = {"initiator": name, "chap": chap}
        every_lun = sorted((m["mapped_lun"], m["lun"], m["write_protect"]) for m in mapped)
        if every_lun != [(lun.lun, lun.lun, False) for lun in sorted(luns, key=lambda lun: lun.lun)]:
            entry["mapped_luns"] = mapped
        return entry


def _is_block_device(path: str) -> bool:
    """A fileio backstore over a block device is served as one; a path absent on this host
    counts as a device when it is under /dev."""
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return path.startswith("/dev/")


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in LOOPBACK_NETWORKS)
