"""Every JSON example in docs/configuration.md is a valid config (or storage object)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from odxtarget.config import parse_config

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
EXAMPLES = re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)


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
