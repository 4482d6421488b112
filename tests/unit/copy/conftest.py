"""Fixtures: ``fs_dir`` runs a test on ext4 (tmp_path) and on the XFS reflink loop mount
(``xfs_mount`` in tests/conftest.py)."""

from __future__ import annotations

import tempfile

import pytest

from tests.unit.copy.odx_helpers import Env


@pytest.fixture(params=["ext4", "xfs"])
def fs_dir(request, tmp_path):
    if request.param == "ext4":
        yield str(tmp_path)
        return
    mount = request.getfixturevalue("xfs_mount")
    directory = tempfile.mkdtemp(dir=mount)
    yield directory


@pytest.fixture
def env(fs_dir):
    environment = Env(fs_dir)
    yield environment
    environment.close()


@pytest.fixture
def ext4_env(tmp_path):
    environment = Env(str(tmp_path))
    yield environment
    environment.close()


@pytest.fixture
def xfs_env(xfs_mount):
    environment = Env(tempfile.mkdtemp(dir=xfs_mount))
    yield environment
    environment.close()
