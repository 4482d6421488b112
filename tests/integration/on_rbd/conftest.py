"""Fixtures of the RBD tests: one one-node Ceph cluster for the whole session
(tests/support/ceph.py), and a fresh image per test.

Where Ceph cannot run (packages missing, not set up) these tests skip, but under CI=true they
fail: RBD storage objects must be tested in CI.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.ceph import CephCluster, ceph_problem

pytestmark = [pytest.mark.integration]

_image_numbers = itertools.count()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but no Ceph cluster: {reason}")
    pytest.skip(f"no Ceph cluster: {reason}")


@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    problem = ceph_problem()
    if problem is not None:
        _unavailable(problem)
    cluster = CephCluster(tmp_path_factory.mktemp("ceph"))
    try:
        cluster.start()
    except (RuntimeError, OSError) as error:
        _unavailable(str(error))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def rbd_image(ceph_cluster: CephCluster) -> Callable[[int], dict[str, Any]]:
    """``rbd_image(size)``: a new image; returns the storage object's "rbd" section for it."""

    def create(size: int) -> dict[str, Any]:
        name = ceph_cluster.create_image(f"test{next(_image_numbers)}", size)
        return {"pool": "rbd", "image": name, "conf": str(ceph_cluster.conf_path)}

    return create
