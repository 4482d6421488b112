"""An in-process daemon (real storage, real LUs and targets, no iSCSI server) for the admin ops."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from odxtarget.admin.ops import AdminOperations
from odxtarget.config import parse_config, save_config
from odxtarget.daemon import Daemon

IQN = "iqn.2026-11.org.example:admin"
INITIATOR = "iqn.2026-11.org.example:host1"
MIB = 1 << 20


class Admin:
    """``AdminOperations`` on a started-without-server ``Daemon``; ``call`` runs one request."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.config_path = directory / "odxtarget.json"
        document = {"schema_version": 1, "state_dir": str(directory / "state"),
                    "storage_objects": [], "targets": []}
        save_config(document, str(self.config_path))
        (directory / "state").mkdir()
        self.daemon = Daemon(parse_config(document, str(self.config_path)))
        self.daemon.open_storage()
        self.daemon.build_targets()
        self.ops = AdminOperations(self.daemon, str(self.config_path))

    def call(self, op: str, **args: Any) -> Any:
        return asyncio.run(self.ops.dispatch(op, args))

    def close(self) -> None:
        self.daemon.close_storage()


@pytest.fixture
def admin(tmp_path):
    instance = Admin(tmp_path)
    yield instance
    instance.close()
