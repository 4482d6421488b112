"""Fixtures: ``fs_dir`` runs a test on ext4 (tmp_path) and on an XFS reflink loop mount."""

from __future__ import annotations

import os
import tempfile

import pytest

from tests.unit.copy.odx_helpers import Env, xfs_reflink_mount, xfs_unavailable_is_fatal


@pytest.fixture(scope="session")
def xfs_mount():
    """A session-wide XFS (reflink=1) loop mount; unmounted and removed at the end.

    Skips where it cannot be made (not root, no xfsprogs), but FAILS under CI=true: the
    reflink code paths must be tested in CI.
    """
    manager = xfs_reflink_mount()
    try:
        directory = manager.__enter__()
    except OSError as error:
        if xfs_unavailable_is_fatal():
            pytest.fail(f"CI=true but no XFS reflink mount: {error}")
        pytest.skip(f"no XFS reflink mount: {error}")
    try:
        yield directory
    finally:
        manager.__exit__(None, None, None)


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
