"""Every JSON example in docs/configuration.md and the client-host pages is a valid config (or
storage object)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from odxtarget.config import parse_config

DOCS = Path(__file__).resolve().parents[3] / "docs"
DOC = DOCS / "configuration.md"
EXAMPLES = re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)
CLIENT_EXAMPLES = re.findall(r"```json\n(.*?)```", (DOCS / "windows.md").read_text(), re.S)


def test_the_document_has_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("block", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_example_is_valid(block):
    obj = json.loads(block)
    if "name" in obj:  # a storage object shown alone: wrap it in a config that maps it
        obj = {
            "storage_objects": [obj],
            "targets": [{"iqn": "iqn.2026-11.org.example:t", "demo_mode": True,
                         "luns": [{"lun": 0, "storage_object": obj["name"]}]}],
        }
    config = parse_config(obj, "/etc/odxtarget/config.json")
    assert config.storage_objects and config.targets


def test_the_windows_page_example_is_valid():
    [block] = CLIENT_EXAMPLES
    config = parse_config(json.loads(block), "/etc/odxtarget/config.json")
    assert [portal.ip for portal in config.targets[0].portals] == ["192.0.2.10", "198.51.100.10"]
    assert config.targets[0].chap is not None and config.targets[0].chap.mutual_userid
