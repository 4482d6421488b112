"""replace_file: temporary file in the target's directory, fsync, rename, fsync of the
directory; and every file odxtarget rewrites in place goes through it."""

from __future__ import annotations

import os
import stat

import pytest

from odxtarget.admin import saving
from odxtarget.atomic_file import replace_file
from odxtarget.config import demo_config_dict, load_config, parse_config, save_config
from odxtarget.storage.reservation_file import ReservationFile


@pytest.fixture
def durability_log(monkeypatch):
    """Every fsync (by what its descriptor names) and every rename, in order."""
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, destination):
        events.append(("rename", os.fspath(source), os.fspath(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_the_file_then_the_rename_then_the_directory_are_made_durable(tmp_path, durability_log):
    target = tmp_path / "state.json"
    target.write_text("old")
    replace_file(str(target), '{"new": true}')
    assert target.read_text() == '{"new": true}'
    [file_sync, rename, directory_sync] = durability_log
    temporary = file_sync[1]
    assert os.path.dirname(temporary) == str(tmp_path)
    assert os.path.basename(temporary).startswith(".state.json.")
    assert rename == ("rename", temporary, str(target))
    assert directory_sync == ("fsync", str(tmp_path))


def test_the_new_file_is_private_and_nothing_is_left_behind(tmp_path):
    target = tmp_path / "secret.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    replace_file(str(target), b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["secret.json"]


def test_a_failed_rename_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old")

    def refuse(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        replace_file(str(target), "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_save_config_syncs_the_directory(tmp_path, durability_log):
    path = tmp_path / "odxtarget.json"
    save_config(demo_config_dict(), str(path))
    assert durability_log[-1] == ("fsync", str(tmp_path))
    assert load_config(str(path)) == parse_config(demo_config_dict(), str(path))


def test_saveconfig_syncs_its_backup_and_the_config_directory(tmp_path, durability_log):
    path = tmp_path / "odxtarget.json"
    save_config(demo_config_dict(), str(path))
    durability_log.clear()
    result = saving.save(load_config(str(path)), str(path))
    synced = [event[1] for event in durability_log if event[0] == "fsync"]
    assert synced[:2] == [result["backup"], str(tmp_path / saving.BACKUP_DIRECTORY)]
    assert synced[-1] == str(tmp_path)


def test_reservation_files_are_saved_the_same_way(tmp_path, durability_log):
    store = ReservationFile.for_logical_unit(str(tmp_path), "disk0")
    store.save({"version": 1, "registrations": []})
    assert store.load() == {"version": 1, "registrations": []}
    assert [event[0] for event in durability_log] == ["fsync", "rename", "fsync"]
    assert durability_log[-1] == ("fsync", os.path.dirname(store.path))
    store.remove()
    assert durability_log[-1] == ("fsync", os.path.dirname(store.path))
