"""``odxtargetcli``: a targetcli-style shell (configshell-fb) over the control socket.

    odxtargetcli                                   # interactive: tab completion, help, ls, cd
    odxtargetcli /iscsi create iqn.2026-11.org.example:t1     # one-shot, like targetcli

The tree is targetcli's: ``/backstores/{extents,block}/<name>``, ``/iscsi/<iqn>/tpg1/{luns,acls,portals}``,
plus ``/odx`` (limits, tokens, counters) and ``/sessions``. The shell holds no state of its own:
before every command it fetches the daemon's ``tree`` snapshot and rebuilds the nodes, and each
``ui_command_*`` is one call of a typed operation (``odxtarget.admin.ops``) over the socket.
Errors are one line; the interactive shell keeps running after them.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import Any

from configshell_fb import ConfigNode, ConfigShell, ExecutionError
from pyparsing import ParseException

from odxtarget import __version__
from odxtarget.admin.client import AdminClient, DaemonNotRunning, UnreachableDaemon
from odxtarget.admin.odx import TUNABLE_LIMITS
from odxtarget.admin.locate import locate_control_socket
from odxtarget.admin.protocol import RUN_CONTROL_SOCKET, SOCKET_ENVIRONMENT, AdminError
from odxtarget.config import LOG_LEVELS, format_size

PROGRAM = "odxtargetcli"
#: Commands that work without a daemon (they only move around or describe the shell).
LOCAL_COMMANDS = frozenset({"help", "exit", "pwd", "cd", "bookmarks", "get", "set"})
CHAP_KEYS = ("userid", "password", "mutual_userid", "mutual_password")
IQN_PREFIX = "iqn.2026-11.org.odxtarget"


def human_size(size: int) -> str:
    text = format_size(size)
    return f"{text}iB" if isinstance(text, str) else f"{text} bytes"


def _plural(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _auth_summary(chap: dict | None) -> str:
    if not chap:
        return "no auth"
    return "mutual CHAP" if chap.get("mutual_userid") else "CHAP"


# -- the nodes ---------------------------------------------------------------------------------


class AdminNode(ConfigNode):
    """A node whose commands run operations on the daemon; ``remote_groups`` are set in one call."""

    #: group name -> parameter names, for groups whose ``set`` becomes one operation.
    remote_groups: dict[str, tuple[str, ...]] = {}

    def __init__(self, name: str, parent: ConfigNode, data: Any = None):
        super().__init__(name, parent)
        self.data = data
        for group, params in self.remote_groups.items():
            for param in params:
                self.define_config_group_param(group, param, "string", self.describe_param(group, param),
                                               writable=self.param_writable(group, param))

    # plumbing ---------------------------------------------------------------------------------
    def call(self, op: str, **args: Any) -> Any:
        return self.get_root().call(op, **args)

    def report(self, result: Any, message: str) -> None:
        for warning in (result or {}).get("warnings", []) if isinstance(result, dict) else []:
            self.shell.log.warning(warning)
        self.shell.con.display(message)

    def describe_param(self, group: str, param: str) -> str:
        return f"The {param} {group} parameter."

    def param_writable(self, group: str, param: str) -> bool:
        return True

    def group_values(self, group: str) -> dict[str, Any]:
        return {}

    def set_group(self, group: str, values: dict[str, str]) -> Any:
        raise ExecutionError(f"{group} parameters cannot be set here")

    def ui_command_set(self, group=None, **parameter):
        """Sets one or more configuration parameters in the given group, in one change.

        Example: set auth userid=alice password=twelve-chars
        Run with just a group name to list its parameters. An empty value clears a credential.
        """
        if group not in self.remote_groups or not parameter:
            return super().ui_command_set(group, **parameter)
        known = self.remote_groups[group]
        for param in parameter:
            if param not in known:
                raise ExecutionError(f"Unknown parameter {param} in group '{group}' (expected: {', '.join(known)}).")
            if not self.param_writable(group, param):
                raise ExecutionError(f"Parameter {param} is read-only.")
        result = self.set_group(group, dict(parameter))
        self.get_root().refresh()
        for warning in (result or {}).get("warnings", []) if isinstance(result, dict) else []:
            self.shell.log.warning(warning)
        for param in parameter:
            self.shell.con.display(f"Parameter {param} is now '{parameter[param]}'.")

    def ui_command_saveconfig(self):
        """Saves the running configuration to the daemon's config file (see help at /)."""
        return self.get_root().ui_command_saveconfig()

    def ui_getgroup_default(self, group: str, param: str) -> str:
        value = self.group_values(group).get(param)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def __getattr__(self, name: str):
        # ui_getgroup_<group> / ui_setgroup_<group> for every remote group.
        for prefix in ("ui_getgroup_", "ui_setgroup_"):
            if name.startswith(prefix) and name[len(prefix):] in type(self).remote_groups:
                group = name[len(prefix):]
                if prefix == "ui_getgroup_":
                    return lambda param: self.ui_getgroup_default(group, param)
                return lambda param, value: self.set_group(group, {param: value})
        raise AttributeError(name)


class RootNode(AdminNode):
    """The top of the tree; holds the client and the last snapshot of the daemon."""

    def __init__(self, shell: ConfigShell, client: AdminClient):
        ConfigNode.__init__(self, "/", shell=shell)
        self.client = client
        self.snapshot: dict[str, Any] | None = None

    def call(self, op: str, **args: Any) -> Any:
        return self.client.call(op, **args)

    def refresh(self) -> None:
        """Fetch the daemon's state and rebuild the tree under ``/`` (keeping the current path)."""
        snapshot = self.client.call("tree")
        current = self.shell._current_node.path if self.shell._current_node is not None else "/"
        self.snapshot = snapshot
        for child in list(self.children):
            self.remove_child(child)
        config = snapshot["config"]
        backstores = AdminNode("backstores", self)
        extents = ExtentsNode("extents", backstores)
        block = BlockNode("block", backstores)
        for so in config["storage_objects"]:
            ExtentNode(so["name"], block if so.get("block") else extents, so)
        iscsi = IscsiNode("iscsi", self)
        for target in config["targets"]:
            target_node = TargetNode(target["iqn"], iscsi, target)
            tpg = TpgNode(f"tpg{target['tpgt']}", target_node, target)
            luns = LunsNode("luns", tpg, target)
            for mapping in target["luns"]:
                LunNode(f"lun{mapping['lun']}", luns, mapping)
            acls = AclsNode("acls", tpg, target)
            for acl in target["acls"]:
                acl_node = AclNode(acl["initiator"], acls, {"target": target["iqn"], **acl})
                for mapped in acl.get("mapped_luns") or []:
                    MappedLunNode(f"mapped_lun{mapped['mapped_lun']}", acl_node, mapped)
            portals = PortalsNode("portals", tpg, target)
            for portal in target["portals"]:
                PortalNode(f"{portal['ip']}:{portal['port']}", portals, portal)
        odx = OdxNode("odx", self, snapshot)
        tokens = TokensNode("tokens", odx, snapshot)
        for token in snapshot["tokens"]:
            TokenNode(token["id"], tokens, token)
        CountersNode("counters", odx, snapshot)
        sessions = SessionsNode("sessions", self, snapshot["sessions"])
        for session in snapshot["sessions"]:
            SessionNode(f"tsih{session['tsih']}", sessions, session)
        node: ConfigNode = self
        for part in [p for p in current.split("/") if p]:
            child = next((c for c in node.children if c.name == part), None)
            if child is None:
                break
            node = child
        self.shell._current_node = node

    def summary(self):
        if self.snapshot is None:
            return "daemon not reached", False
        return ("unsaved changes" if self.snapshot.get("unsaved_changes") else "saved"), True

    def ui_command_saveconfig(self):
        """Saves the running configuration to the daemon's config file (atomically, mode 0600);
        the previous file is kept as a dated backup. The daemon loads that file at start."""
        result = self.call("config.save")
        backup = f" (previous version kept as {result['backup']})" if result.get("backup") else ""
        self.shell.con.display(f"Configuration saved to {result['path']}{backup}")

    def ui_command_restoreconfig(self, savefile=None, confirm=None):
        """Replaces the running configuration with a saved one (default: the daemon's config
        file). Needs confirm=true. Sessions of targets that change may be dropped."""
        self.call("config.restore", path=savefile, confirm=confirm or "false")
        self.shell.con.display(f"Configuration restored from {savefile or 'the config file'}.")

    def ui_command_clearconfig(self, confirm=None):
        """Removes every target and storage object from the running configuration (their files
        stay). Needs confirm=true; saveconfig afterwards makes it permanent."""
        self.call("config.clear", confirm=confirm or "false")
        self.shell.con.display("All configuration cleared.")

    def ui_command_loglevel(self, level=None):
        """Shows the daemon's log level, or changes it live: loglevel debug (debug, info,
        warning, error or critical). saveconfig keeps it. This is the daemon's log; the shell's
        own messages follow "set global loglevel_console"."""
        if level is None:
            self.shell.con.display(f"log level: {self.call('log.level')['level']}")
            return
        result = self.call("log.set_level", level=level)
        self.shell.con.display(f"Log level is now {result['level']}.")

    def ui_complete_loglevel(self, parameters, text, current_param):
        if current_param != "level":
            return []
        return [level for level in LOG_LEVELS if level.startswith(text)]

    def ui_command_status(self):
        """Shows the daemon's version, config file, listening portals, unsaved changes and the
        storage objects whose write-back failed (docs/errors.md)."""
        status = self.call("status")
        for key in ("version", "pid", "config_path", "listening", "unsaved_changes", "odx", "write_back_failed"):
            value = status[key]
            if isinstance(value, list):
                value = ", ".join(value) or "nothing"
            self.shell.con.display(f"{key}: {value}")


class ExtentsNode(AdminNode):
    """Storage objects backed by sparse files."""

    def summary(self):
        return _plural(len(self.children), "Storage Object"), None

    def ui_command_create(self, name, size, path=None, block_size=None, read_only=None):
        """Creates a storage object of SIZE bytes (K/M/G/T suffixes allowed) in one sparse file,
        by default STATE_DIR/NAME.img. block_size is 512 (default) or 4096."""
        result = self.call("extent.create", name=name, size=size, path=path, block_size=block_size,
                           read_only=read_only)
        self.report(result, f"Created extent {name} ({human_size(result['size'])}, {result['path']}).")

    def ui_complete_create(self, parameters, text, current_param):
        if current_param == "block_size":
            return [v for v in ("512", "4096") if v.startswith(text)]
        if current_param == "read_only":
            return [v for v in ("true", "false") if v.startswith(text)]
        return []

    def ui_command_delete(self, name):
        """Deletes a storage object; refused while a LUN maps it. Its file is kept."""
        result = self.call("extent.delete", name=name)
        self.report(result, f"Deleted extent {name}.")

    def ui_complete_delete(self, parameters, text, current_param):
        if current_param == "name":
            return [c.name for c in self.children if c.name.startswith(text)]
        return []


class BlockNode(AdminNode):
    """Storage objects on block devices: LVM volumes, disks, zvols (targetcli's /backstores/block)."""

    def summary(self):
        return _plural(len(self.children), "Storage Object"), None

    def ui_command_create(self, name, dev, size=None, block_size=None, read_only=None):
        """Creates a storage object on the block device DEV (docs/block.md), as large as the device
        unless SIZE is given (K/M/G/T suffixes allowed). block_size is 512 (default) or 4096, and
        at least the device's logical sector. The device is never created or resized."""
        result = self.call("block.create", name=name, dev=dev, size=size, block_size=block_size,
                           read_only=read_only)
        self.report(result, f"Created block storage object {name} ({human_size(result['size'])}, {result['path']}).")

    def ui_complete_create(self, parameters, text, current_param):
        if current_param == "dev":
            directory = os.path.dirname(text) or "/dev"
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                return []
            return [path for path in (os.path.join(directory, name) for name in names) if path.startswith(text)]
        if current_param == "block_size":
            return [v for v in ("512", "4096") if v.startswith(text)]
        if current_param == "read_only":
            return [v for v in ("true", "false") if v.startswith(text)]
        return []

    def ui_command_delete(self, name):
        """Deletes a block storage object; refused while a LUN maps it. The device is untouched."""
        result = self.call("extent.delete", name=name)
        self.report(result, f"Deleted block storage object {name}.")

    def ui_complete_delete(self, parameters, text, current_param):
        if current_param == "name":
            return [c.name for c in self.children if c.name.startswith(text)]
        return []


def _backstore(so: dict[str, Any]) -> str:
    """The /backstores node that lists a storage object."""
    return "block" if so.get("block") else "extents"


def _storage_place(so: dict[str, Any]) -> str:
    """Where a storage object's bytes live, as the shell shows it: its first file, its block
    device, or its image."""
    if so.get("rbd"):
        return f"rbd:{so['rbd']['pool']}/{so['rbd']['image']}"
    if so.get("block"):
        return so["block"]["path"]
    return so["extents"][0]["path"]


class ExtentNode(AdminNode):
    """One storage object: set attribute read_only=true|false; resize size=SIZE; reopen."""

    remote_groups = {"attribute": ("read_only", "size", "block_size", "path", "write_cache")}

    def param_writable(self, group, param):
        return param == "read_only"

    def describe_param(self, group, param):
        return {"read_only": "Refuse writes (DATA PROTECT); applies to the next command.",
                "size": "Capacity in bytes (change it with resize).",
                "block_size": "Logical block size (fixed once created).",
                "path": "The backing file, block device (docs/block.md), or rbd:POOL/IMAGE for an RBD"
                        " image (docs/rbd.md).",
                "write_cache": "Whether the write cache is reported enabled."}[param]

    def group_values(self, group):
        so = self.data
        return {"read_only": so["read_only"], "size": so["size"], "block_size": so["block_size"],
                "path": _storage_place(so), "write_cache": so["write_cache"]}

    def set_group(self, group, values):
        return self.call("extent.set", name=self.name, **values)

    def summary(self):
        so = self.data
        from odxtarget.config import parse_size
        size = parse_size(so["size"])
        mapped = self.get_root().snapshot and any(
            m["storage_object"] == so["name"] for t in self.get_root().snapshot["config"]["targets"]
            for m in t["luns"])
        flags = ["ro" if so["read_only"] else "rw", "mapped" if mapped else "unmapped"]
        failed = self.write_back_state().get("write_back_failed", False)
        if failed:
            flags.append("WRITE-BACK FAILED")
        return (f"{_storage_place(so)} ({human_size(size)}, {so['block_size']}-byte blocks) {' '.join(flags)}",
                not failed)

    def write_back_state(self) -> dict[str, Any]:
        """This storage object's entry of the snapshot's ``storage`` (docs/errors.md)."""
        snapshot = self.get_root().snapshot or {}
        return snapshot.get("storage", {}).get(self.name, {})

    def ui_command_reopen(self, confirm=None):
        """Reopens the storage object's files and clears its write-back failed state, so that
        SYNCHRONIZE CACHE and FUA writes succeed again. After a failed flush, data written
        before it may be lost: check the storage first; confirm=true is then required."""
        result = self.call("extent.reopen", name=self.name, confirm=confirm or "false")
        if result["cleared"]:
            self.shell.con.display(f"Reopened {self.name}; write-back failure cleared (data written before"
                                   f" {result['failed_at']} may be lost).")
        else:
            self.shell.con.display(f"Reopened {self.name}.")

    def ui_command_resize(self, size):
        """Changes the size. Growing applies live (initiators see CAPACITY DATA HAS CHANGED);
        shrinking is refused while the storage object is mapped."""
        result = self.call("extent.resize", name=self.name, size=size)
        self.report(result, f"Resized {self.name} from {human_size(result['old_size'])} to {human_size(result['size'])}.")

    def ui_command_info(self):
        """Shows every attribute of this storage object, and its write-back state."""
        for key, value in self.data.items():
            self.shell.con.display(f"{key}: {value}")
        state = self.write_back_state()
        if state.get("write_back_failed"):
            self.shell.con.display(f"write_back: FAILED at {state['write_back_failed_at']}:"
                                   f" {state['write_back_error']} (see `help reopen`)")
        else:
            self.shell.con.display("write_back: ok")


class IscsiNode(AdminNode):
    """iSCSI targets."""

    def summary(self):
        return _plural(len(self.children), "Target"), None

    def ui_command_create(self, wwn=None):
        """Creates an iSCSI target named WWN (an iqn., eui. or naa. name; generated when omitted)
        with tpg1 and a portal where the daemon listens. Add LUNs, and ACLs or demo mode."""
        wwn = wwn or f"{IQN_PREFIX}:{secrets.token_hex(4)}"
        result = self.call("target.create", iqn=wwn)
        self.report(result, f"Created target {wwn}.\nCreated TPG 1 with portal {result['portal']}.")

    def ui_command_delete(self, wwn):
        """Deletes a target; its sessions are dropped. Its storage objects stay."""
        result = self.call("target.delete", iqn=wwn)
        self.report(result, f"Deleted target {wwn}.")

    def ui_complete_delete(self, parameters, text, current_param):
        if current_param == "wwn":
            return [c.name for c in self.children if c.name.startswith(text)]
        return []


class TargetNode(AdminNode):
    def summary(self):
        return _plural(len(self.children), "TPG"), None

    def ui_command_info(self):
        """Shows the target's configuration."""
        for key, value in self.data.items():
            self.shell.con.display(f"{key}: {value}")


class TpgNode(AdminNode):
    """The target portal group: set attribute demo_mode=true|false demo_mode_write_protect=true|false;
    set auth userid=... password=..."""

    remote_groups = {"attribute": ("demo_mode", "generate_node_acls", "demo_mode_write_protect", "authentication"),
                     "auth": CHAP_KEYS}

    @property
    def iqn(self) -> str:
        return self.data["iqn"]

    def param_writable(self, group, param):
        return param != "authentication"

    def describe_param(self, group, param):
        if group == "auth":
            return f"CHAP {param} every initiator must use unless its ACL sets its own (empty clears)."
        return {"demo_mode": "Any initiator may log in; ACLs are not needed.",
                "generate_node_acls": "targetcli's name for demo_mode.",
                "demo_mode_write_protect": "Initiators no ACL names see every LUN write-protected.",
                "authentication": "Whether CHAP is required (true when credentials are set here or in an ACL)."}[param]

    def group_values(self, group):
        target = self.data
        if group == "auth":
            return dict(target["chap"] or {})
        return {"demo_mode": target["demo_mode"], "generate_node_acls": target["demo_mode"],
                "demo_mode_write_protect": target.get("demo_mode_write_protect", False),
                "authentication": bool(target["chap"] or any(a["chap"] for a in target["acls"]))}

    def set_group(self, group, values):
        if group == "auth":
            return self.call("tpg.set_auth", iqn=self.iqn, **values)
        if "generate_node_acls" in values:
            values.setdefault("demo_mode", values.pop("generate_node_acls"))
        return self.call("tpg.set", iqn=self.iqn, **values)

    def summary(self):
        target = self.data
        access = "demo mode" if target["demo_mode"] else _plural(len(target["acls"]), "ACL")
        if target["demo_mode"] and target.get("demo_mode_write_protect"):
            access += " (write-protected)"
        auth = _auth_summary(target["chap"])
        if not target["chap"] and any(a["chap"] for a in target["acls"]):
            auth = "CHAP per ACL"
        return f"{access}, {auth}", True


class LunsNode(AdminNode):
    """LUNs of the TPG: create /backstores/extents/NAME [lun]."""

    def summary(self):
        return _plural(len(self.children), "Mapped LUN"), None

    def ui_command_create(self, storage_object, lun=None):
        """Maps a storage object (its name or /backstores/extents/NAME path) as LUN number LUN
        (the lowest free one when omitted). Sessions see it at once."""
        result = self.call("lun.create", iqn=self.data["iqn"], storage_object=storage_object, lun=lun)
        self.report(result, f"Created LUN {result['lun']} ({result['storage_object']}).")

    def ui_complete_create(self, parameters, text, current_param):
        if current_param == "storage_object":
            paths = [f"/backstores/{_backstore(so)}/{so['name']}"
                     for so in self.get_root().snapshot["config"]["storage_objects"]]
            return [path for path in paths if path.startswith(text)]
        return []

    def ui_command_delete(self, lun):
        """Unmaps LUN number LUN; the storage object stays."""
        self.call("lun.delete", iqn=self.data["iqn"], lun=str(lun).removeprefix("lun"))
        self.shell.con.display(f"Deleted LUN {str(lun).removeprefix('lun')}.")


class LunNode(AdminNode):
    def summary(self):
        name = self.data["storage_object"]
        so = next((so for so in self.get_root().snapshot["config"]["storage_objects"] if so["name"] == name), {})
        return f"{_backstore(so)}/{name}", True


class AclsNode(AdminNode):
    """Initiators allowed to log in: create WWN; delete WWN."""

    def summary(self):
        return _plural(len(self.children), "ACL"), None

    def ui_command_create(self, wwn):
        """Allows initiator WWN to log in; it sees every LUN of this TPG."""
        result = self.call("acl.create", iqn=self.data["iqn"], initiator=wwn)
        self.report(result, f"Created ACL for {wwn}.")

    def ui_command_delete(self, wwn):
        """Removes the ACL; the initiator's sessions are dropped unless demo mode admits it."""
        result = self.call("acl.delete", iqn=self.data["iqn"], initiator=wwn)
        self.report(result, f"Deleted ACL for {wwn}.")

    def ui_complete_delete(self, parameters, text, current_param):
        if current_param == "wwn":
            return [c.name for c in self.children if c.name.startswith(text)]
        return []


class AclNode(AdminNode):
    """One initiator: set auth userid=... password=... [mutual_userid=... mutual_password=...]."""

    remote_groups = {"auth": CHAP_KEYS}

    def describe_param(self, group, param):
        return f"CHAP {param} for this initiator (empty clears; mutual_ pair: the target's answer)."

    def group_values(self, group):
        return dict(self.data["chap"] or {})

    def set_group(self, group, values):
        return self.call("acl.set_auth", iqn=self.data["target"], initiator=self.name, **values)

    def summary(self):
        mapped = self.data.get("mapped_luns")
        shown = "all" if mapped is None else str(len(mapped))
        return f"Mapped LUNs: {shown}, {_auth_summary(self.data['chap'])}", True

    def ui_command_create(self, mapped_lun, tpg_lun_or_backstore, write_protect="false"):
        """Shows the TPG's LUN TPG_LUN_OR_BACKSTORE (its number, lunN, or the storage object it
        maps) to this initiator as LUN MAPPED_LUN, read-only when WRITE_PROTECT is true. Once an
        ACL has mapped LUNs its initiator sees only those. The initiator's sessions end and see
        the new map when they log in again."""
        lun = self._tpg_lun(str(tpg_lun_or_backstore))
        result = self.call("mapped_lun.create", iqn=self.data["target"], initiator=self.name,
                           mapped_lun=str(mapped_lun).removeprefix("mapped_lun"), lun=lun,
                           write_protect=write_protect)
        access = "read-only" if result["write_protect"] else "read-write"
        self.report(result, f"Created Mapped LUN {result['mapped_lun']} (TPG LUN {result['lun']}, {access}).")

    def ui_command_delete(self, mapped_lun):
        """Stops showing mapped LUN MAPPED_LUN to this initiator; its sessions end."""
        number = str(mapped_lun).removeprefix("mapped_lun")
        result = self.call("mapped_lun.delete", iqn=self.data["target"], initiator=self.name, mapped_lun=number)
        self.report(result, f"Deleted Mapped LUN {number}.")

    def ui_complete_delete(self, parameters, text, current_param):
        if current_param == "mapped_lun":
            return [c.name for c in self.children if c.name.startswith(text)]
        return []

    def _tpg_lun(self, value: str) -> str:
        """A TPG LUN number from ``N``, ``lunN``, or a storage object name or path it maps."""
        number = value.removeprefix("lun")
        if number.isdigit():
            return number
        name = value.rstrip("/").rsplit("/", 1)[-1]
        target = next(t for t in self.get_root().snapshot["config"]["targets"] if t["iqn"] == self.data["target"])
        for mapping in target["luns"]:
            if mapping["storage_object"] == name:
                return str(mapping["lun"])
        raise ExecutionError(f'storage object "{name}" is not a LUN of this TPG; map it under luns first')


class MappedLunNode(AdminNode):
    """One LUN this initiator sees: the TPG LUN it shows, and whether it is write-protected."""

    def summary(self):
        access = "ro" if self.data["write_protect"] else "rw"
        return f"lun{self.data['lun']} {access}", True


class PortalsNode(AdminNode):
    """Network portals: create ip_address [ip_port]; delete ip_address ip_port."""

    def summary(self):
        return _plural(len(self.children), "Portal"), None

    def ui_command_create(self, ip_address=None, ip_port=None):
        """Listens for this target on IP_ADDRESS:IP_PORT (default 127.0.0.1:3260)."""
        result = self.call("portal.create", iqn=self.data["iqn"], ip=ip_address, port=ip_port)
        self.report(result, f"Created network portal {result['portal']}.")

    def ui_command_delete(self, ip_address, ip_port):
        """Stops offering this target on IP_ADDRESS:IP_PORT (running sessions stay)."""
        result = self.call("portal.delete", iqn=self.data["iqn"], ip=ip_address, port=ip_port)
        self.report(result, f"Deleted network portal {ip_address}:{ip_port}.")


class PortalNode(AdminNode):
    def summary(self):
        return "OK", True


class OdxNode(AdminNode):
    """ODX copy offload: get limits / set limits NAME=VALUE; see tokens and counters below."""

    remote_groups = {"limits": tuple(TUNABLE_LIMITS)}

    def describe_param(self, group, param):
        return TUNABLE_LIMITS[param].help

    def group_values(self, group):
        if not self.data["odx"]:
            raise ExecutionError("ODX copy offload is not running in this daemon")
        return self.call("odx.limits")

    def set_group(self, group, values):
        return self.call("odx.set_limits", **values)

    def summary(self):
        return ("enabled", True) if self.data["odx"] else ("not available", False)


class TokensNode(AdminNode):
    """Live ROD tokens; revoke TOKEN makes its next use fail with 23h/06h."""

    def summary(self):
        return _plural(len(self.children), "live token"), None

    def ui_command_revoke(self, token):
        """Revokes a live token (the id `ls` shows); WRITE USING TOKEN with it then fails with
        INVALID TOKEN OPERATION, TOKEN REVOKED (23h/06h)."""
        result = self.call("odx.revoke", token=token)
        self.shell.con.display(f"Revoked token {result['revoked']}.")

    def ui_complete_revoke(self, parameters, text, current_param):
        return [c.name for c in self.children if c.name.startswith(text)]

    def ui_command_info(self):
        """Lists every live token with its creator, ranges, size, age and expiry."""
        tokens = self.call("odx.tokens")
        if not tokens:
            self.shell.con.display("No live tokens.")
        for token in tokens:
            self.shell.con.display(TokenNode.describe(token))


class TokenNode(AdminNode):
    @staticmethod
    def describe(token: dict) -> str:
        ranges = ", ".join(f"{lba}+{blocks}" for lba, blocks in token["ranges"])
        expiry = "in use" if token["expires_in"] is None else f"expires in {token['expires_in']:.0f}s"
        age = f"age {token['age']:.0f}s" if token.get("age") is not None else f"idle {token['idle']:.0f}s"
        return (f"{token['id']} creator {token['creator']} {token['kind']} ranges {ranges}"
                f" ({human_size(token['bytes'])}) {age} {expiry}")

    def summary(self):
        return TokenNode.describe(self.data).split(" ", 1)[1], True

    def ui_command_revoke(self):
        """Revokes this token (its next use fails with 23h/06h)."""
        result = self.call("odx.revoke", token=self.name)
        self.shell.con.display(f"Revoked token {result['revoked']}.")


class CountersNode(AdminNode):
    """Copy counters: bytes offloaded by method."""

    def summary(self):
        if not self.data["odx"]:
            return "not available", None
        return "see info", None

    def ui_command_info(self):
        """Shows bytes offloaded per method in total and per logical unit."""
        counters = self.call("odx.counters")
        total = counters["bytes_by_method"]
        self.shell.con.display("bytes by method: " + (", ".join(f"{k}={v}" for k, v in total.items()) or "none"))
        for lu, values in counters["logical_units"].items():
            self.shell.con.display(f"{lu}: {values}")


class SessionsNode(AdminNode):
    """Logged-in initiators."""

    def summary(self):
        return _plural(len(self.data), "session"), None


class SessionNode(AdminNode):
    def summary(self):
        s = self.data
        luns = ",".join(str(n) for n in s.get("luns", [])) or "none"
        return (f"{s['initiator']} -> {s['target']} from {s['peer']} LUNs {luns}"
                f" digests header {s['header_digest']} data {s['data_digest']}"), True

    def ui_command_info(self):
        """Shows everything known about this session."""
        for key, value in self.data.items():
            self.shell.con.display(f"{key}: {value}")


# -- the shell ---------------------------------------------------------------------------------


class AdminShell(ConfigShell):
    """ConfigShell that refreshes the tree from the daemon before every command."""

    def __init__(self, client: AdminClient):
        super().__init__(preferences_dir=None)  # no pickled preferences (style-anchors 3)
        self.prefs["color_mode"] = not os.environ.get("NO_COLOR") and sys.stdout.isatty()
        self.prefs["loglevel_console"] = "info"
        self.root = RootNode(self, client)

    def run_cmdline(self, cmdline):
        cmdline = cmdline.strip()
        if not cmdline:
            return
        command = self._parse_cmdline(cmdline)[2]
        try:
            self.root.refresh()
        except DaemonNotRunning:
            if command not in LOCAL_COMMANDS:
                raise
        try:
            super().run_cmdline(cmdline)
        finally:
            if command not in LOCAL_COMMANDS:
                try:
                    self.root.refresh()
                except AdminError:
                    pass

    def run_one(self, cmdline: str) -> bool:
        """Run one command line; print a one-line error and return False if it fails."""
        try:
            self.run_cmdline(cmdline)
            return True
        except (ExecutionError, AdminError) as error:
            self.log.error(str(error))
        except ParseException as error:
            self.log.error(f"cannot parse the command line: {error.msg}")
        return False

    def interact(self) -> None:
        try:
            self.root.refresh()
        except AdminError as error:
            self.log.error(str(error))
        while not self._exit:
            try:
                self.run_interactive()
            except (ExecutionError, AdminError) as error:
                self.log.error(str(error))
            except ParseException as error:
                self.log.error(f"cannot parse the command line: {error.msg}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Administer a running odxtarget daemon (interactive shell, or one command).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--socket", metavar="PATH", default=None,
                        help=f"the daemon's control socket (default: ${SOCKET_ENVIRONMENT}, else the"
                             " --config file's, else the first of ./run/control.sock, ./control.sock,"
                             f" {RUN_CONTROL_SOCKET}, /var/lib/odxtarget/control.sock that exists)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="reach the daemon that serves this configuration file (its state_dir's control.sock)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="one shell command to run, e.g. /iscsi create iqn.2026-11.org.example:t1")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    client: AdminClient
    try:
        client = AdminClient(locate_control_socket(arguments.socket, arguments.config))
    except AdminError as error:
        client = UnreachableDaemon(error)   # help, cd and the like still work
    shell = AdminShell(client)
    try:
        if arguments.command:
            return 0 if shell.run_one(" ".join(arguments.command)) else 1
        if not sys.stdin.isatty():
            ok = True
            for line in sys.stdin:
                ok = shell.run_one(line) and ok
                if shell._exit:
                    break
            return 0 if ok else 1
        shell.interact()
        return 0
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
