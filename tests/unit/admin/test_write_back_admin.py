"""A storage object whose flush failed, as the administrator sees and recovers it: status, the
shell's tree, and ``extent.reopen`` (docs/errors.md, "Recovery")."""

from __future__ import annotations

import errno
import io
import logging
import os
import struct

import pytest

from odxtarget.scsi.execution import complete_inline
from odxtarget.admin.protocol import AdminError
from odxtarget.admin.shell import AdminShell
from odxtarget.scsi.types import ItNexus, ScsiCommand, Status
from odxtarget.storage import extents as extents_module

from .conftest import INITIATOR, IQN

NEXUS = ItNexus(f"{INITIATOR},i,0x400001370000", f"{IQN},t,0x0001")
SYNCHRONIZE_CACHE_10 = bytes((0x35,)) + bytes(9)
BLOCK = 512


def write10(lba: int, fua: bool = False) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, 1, 0)


class Initiator:
    """Commands to LUN 0 of the admin fixture's target, as one nexus."""

    def __init__(self, admin):
        self.target = admin.ops.live.scsi_target(IQN)
        for _ in range(3):  # clear the power-on unit attention
            self.run(bytes(6))

    def run(self, cdb: bytes, data: bytes = b""):
        return complete_inline(self.target.execute(ScsiCommand(cdb, NEXUS, 0, data, len(data))))

    def triplet(self, cdb: bytes, data: bytes = b"") -> tuple[int, int, int] | int:
        result = self.run(cdb, data)
        if result.status == Status.GOOD:
            return Status.GOOD
        return result.sense[2] & 0x0F, result.sense[12], result.sense[13]


@pytest.fixture
def failed(admin, monkeypatch):
    """disk0 mapped as LUN 0, after one SYNCHRONIZE CACHE whose fdatasync failed."""
    admin.call("extent.create", name="disk0", size="4M")
    admin.call("target.create", iqn=IQN)
    admin.call("lun.create", iqn=IQN, storage_object="disk0")
    initiator = Initiator(admin)
    assert initiator.triplet(write10(0), b"a" * BLOCK) == Status.GOOD
    real = os.fdatasync
    remaining = [1]

    def fails_once(fd: int) -> None:
        if remaining:
            remaining.pop()
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(extents_module.os, "fdatasync", fails_once)
    assert initiator.triplet(SYNCHRONIZE_CACHE_10) == (0x3, 0x0C, 0x00)
    return initiator


def test_status_and_tree_show_the_failed_storage_object(admin, failed):
    assert admin.call("status")["write_back_failed"] == ["disk0"]
    state = admin.call("tree")["storage"]["disk0"]
    assert state["write_back_failed"] is True
    assert "Input/output error" in state["write_back_error"] and state["write_back_failed_at"]
    # fdatasync works again, the LU still refuses to promise durability.
    assert failed.triplet(SYNCHRONIZE_CACHE_10) == (0x3, 0x0C, 0x00)
    assert failed.triplet(write10(1, fua=True), b"f" * BLOCK) == (0x3, 0x0C, 0x00)
    assert failed.triplet(write10(2), b"c" * BLOCK) == Status.GOOD


def test_reopen_needs_confirmation_then_clears_the_state(admin, failed, caplog):
    lu = admin.daemon.logical_units["disk0"]
    old_backend = admin.daemon.backends["disk0"]
    with pytest.raises(AdminError, match=r"write-back failed at .*data written before then may be lost.*confirm=true"):
        admin.call("extent.reopen", name="disk0")
    assert lu.write_back_failure is not None and admin.daemon.backends["disk0"] is old_backend
    with caplog.at_level(logging.WARNING):
        result = admin.call("extent.reopen", name="disk0", confirm="true")
    assert result["cleared"] is True and result["failed_at"]
    assert "may be lost" in caplog.text and "files reopened by the administrator" in caplog.text
    assert admin.daemon.backends["disk0"] is not old_backend
    assert lu.write_back_failure is None and admin.call("status")["write_back_failed"] == []
    assert failed.triplet(SYNCHRONIZE_CACHE_10) == Status.GOOD
    assert failed.triplet(write10(1, fua=True), b"f" * BLOCK) == Status.GOOD
    data = bytearray(BLOCK)
    lu.backend.read_into(0, memoryview(data))
    assert bytes(data) == b"a" * BLOCK                      # the same files, opened again
    assert admin.call("status")["unsaved_changes"] is True  # from the creates; reopen is no config change


def test_reopen_without_a_failure_just_reopens(admin):
    admin.call("extent.create", name="disk0", size="4M")
    before = admin.daemon.backends["disk0"]
    assert admin.call("extent.reopen", name="disk0") == {"name": "disk0", "cleared": False, "failed_at": None}
    assert admin.daemon.backends["disk0"] is not before
    with pytest.raises(AdminError, match='no storage object "nope"'):
        admin.call("extent.reopen", name="nope")


class SnapshotClient:
    """What the shell's client would fetch from the daemon, served from ``AdminOperations``."""

    def __init__(self, admin):
        self.admin = admin

    def call(self, op: str, **args):
        return self.admin.call(op, **{k: v for k, v in args.items() if v is not None})

    def close(self) -> None:
        pass


def test_the_shell_shows_write_back_failed_in_ls_info_and_status(admin, failed):
    shell = AdminShell(SnapshotClient(admin))
    output = io.StringIO()
    shell.con._stdout = output          # configshell binds sys.stdout when it is imported

    def run(command: str) -> str:
        output.seek(0)
        output.truncate()
        assert shell.run_one(command), command
        return output.getvalue()

    listing = run("ls /backstores")
    assert "disk0" in listing and "WRITE-BACK FAILED" in listing
    assert "write_back: FAILED at" in run("/backstores/extents/disk0 info")
    assert "write_back_failed: disk0" in run("status")
    assert not shell.run_one("/backstores/extents/disk0 reopen")
    assert "write-back failure cleared" in run("/backstores/extents/disk0 reopen confirm=true")
    assert "WRITE-BACK FAILED" not in run("ls /backstores")
    assert "write_back: ok" in run("/backstores/extents/disk0 info")
