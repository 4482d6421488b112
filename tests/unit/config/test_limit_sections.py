"""The "odx" and "iscsi" sections: keys, defaults and kinds come from CopyLimits and
IscsiLimits, values are checked like the rest of the file, and dump_config writes back only
what differs from the defaults."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from odxtarget.config import (
    ISCSI_SECTION,
    ODX_SECTION,
    ConfigError,
    DaemonConfig,
    OdxConfig,
    demo_config_dict,
    dump_config,
    parse_config,
    parse_size,
)
from odxtarget.copy.limits import CONFIG_METADATA, CopyLimits
from odxtarget.transport.iscsi.limits import IscsiLimits

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "configuration.md"


def parse(**sections) -> DaemonConfig:
    return parse_config({"schema_version": 1, **sections})


def problems(**sections) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(**sections)
    return raised.value.problems


def smaller_legal_value(key):
    """Half the default: legal for every key on its own (no key's default sits at a bound)."""
    return key.default / 2 if key.kind == "seconds" else key.default // 2


# -- odx ------------------------------------------------------------------------------------------


def test_every_copy_limits_field_the_config_exposes_has_the_dataclass_default():
    defaults = CopyLimits()
    exposed = [item for item in dataclasses.fields(CopyLimits) if CONFIG_METADATA in item.metadata]
    assert [key.name for key in ODX_SECTION.keys] == [item.name for item in exposed]
    for key in ODX_SECTION.keys:
        assert key.default == getattr(defaults, key.name), key.name
    assert [item.name for item in dataclasses.fields(OdxConfig)] == list(ODX_SECTION.key_names)
    assert CopyLimits(**parse().odx.limits_overrides()) == defaults


def test_the_odx_keys_include_the_per_initiator_quotas():
    assert set(ODX_SECTION.key_names) == {
        "max_range_descriptors", "default_inactivity_timeout", "max_inactivity_timeout",
        "max_token_transfer_bytes", "optimal_transfer_bytes", "write_using_token_budget",
        "max_rod_bytes", "background_step_bytes",
        "max_tokens_per_initiator", "max_rod_bytes_per_initiator",
    }


@pytest.mark.parametrize("key", ODX_SECTION.keys, ids=lambda key: key.name)
def test_each_odx_key_reaches_copy_limits_and_round_trips(key):
    value = smaller_legal_value(key)
    config = parse(odx={key.name: key.spelled(value)})
    assert getattr(config.odx, key.name) == value
    assert getattr(CopyLimits(**config.odx.limits_overrides()), key.name) == value
    dumped = dump_config(config)
    assert dumped["odx"] == {key.name: key.spelled(value)}
    assert parse_config(dumped) == config


def test_the_per_initiator_quotas_are_configurable():
    config = parse(odx={"max_tokens_per_initiator": 16, "max_rod_bytes": "4G",
                        "max_rod_bytes_per_initiator": "1G"})
    limits = CopyLimits(**config.odx.limits_overrides())
    assert (limits.max_tokens_per_initiator, limits.max_rod_bytes, limits.max_rod_bytes_per_initiator) == (
        16, 4 << 30, 1 << 30)
    assert dump_config(config)["odx"] == {"max_rod_bytes": "4G", "max_tokens_per_initiator": 16,
                                          "max_rod_bytes_per_initiator": "1G"}


@pytest.mark.parametrize("odx, message", [
    ({"max_range_descriptors": 0}, "odx.max_range_descriptors: must be between 1 and 65535, got 0"),
    ({"max_inactivity_timeout": 1 << 32}, "odx.max_inactivity_timeout: must be between 1 and 4294967294"),
    ({"default_inactivity_timeout": 2.5}, "odx.default_inactivity_timeout: expected an integer, got a number (2.5)"),
    ({"default_inactivity_timeout": 700},
     "odx.default_inactivity_timeout: must not exceed max_inactivity_timeout (default 600)"),
    ({"optimal_transfer_bytes": "512M"},
     "odx.optimal_transfer_bytes: must not exceed max_token_transfer_bytes (default 256M)"),
    ({"optimal_transfer_bytes": "128M", "max_token_transfer_bytes": "64M"},
     "odx.optimal_transfer_bytes: must not exceed max_token_transfer_bytes (64M)"),
    ({"max_tokens_per_initiator": 0}, "odx.max_tokens_per_initiator: must be at least 1, got 0"),
    ({"max_rod_bytes_per_initiator": 1000}, "odx.max_rod_bytes_per_initiator: must be a positive multiple of 4096, got 1000"),
    ({"max_rod_bytes": 0}, "odx.max_rod_bytes: must be a positive multiple of 4096, got 0"),
    ({"background_step_bytes": "lots"}, 'odx.background_step_bytes: invalid size "lots"'),
    ({"write_using_token_budget": 61}, "odx.write_using_token_budget: expected seconds, more than 0 and at most 60.0, got a number (61)"),
    ({"write_using_token_budget": None}, "odx.write_using_token_budget: expected seconds, more than 0 and at most 60.0, got null"),
    ({"max_tokens": 1}, "odx.max_tokens: unknown key ("),  # not a key: the file cannot set it
    ("all", "odx: expected an object, got a string"),
])
def test_odx_problems_name_their_key(odx, message):
    assert any(problem.startswith(message) for problem in problems(odx=odx)), problems(odx=odx)


def test_an_odx_section_with_only_defaults_is_dumped_as_written_but_a_missing_one_is_not():
    assert "odx" not in dump_config(parse())
    assert "odx" not in dump_config(parse(odx=None))
    assert dump_config(parse(odx={"max_range_descriptors": 64}))["odx"] == {"max_range_descriptors": 64}


# -- iscsi ----------------------------------------------------------------------------------------


def test_the_iscsi_keys_are_exactly_the_iscsi_limits_fields_with_their_defaults():
    defaults = IscsiLimits()
    assert ISCSI_SECTION.key_names == tuple(item.name for item in dataclasses.fields(IscsiLimits))
    for key in ISCSI_SECTION.keys:
        assert key.default == getattr(defaults, key.name), key.name
    assert {key.name: key.kind for key in ISCSI_SECTION.keys if key.kind != "integer"} == {
        "max_pending_send_bytes": "size", "max_data_out_bytes": "size", "max_text_bytes": "size",
        "login_timeout": "seconds", "discovery_idle_timeout": "seconds", "failed_login_window": "seconds",
    }


def test_without_an_iscsi_section_the_config_has_the_default_limits_and_dumps_none():
    for config in (parse(), parse(iscsi=None), parse(iscsi={})):
        assert config.iscsi == IscsiLimits()
        assert "iscsi" not in dump_config(config)
    demo = demo_config_dict()
    assert list(dump_config(parse_config(demo, "/srv/demo/odxtarget.json"))) == list(demo)


@pytest.mark.parametrize("key", ISCSI_SECTION.keys, ids=lambda key: key.name)
def test_each_iscsi_key_is_set_dumped_alone_and_round_trips(key):
    value = smaller_legal_value(key)
    config = parse(iscsi={key.name: key.spelled(value)})
    assert getattr(config.iscsi, key.name) == value
    assert config.iscsi == dataclasses.replace(IscsiLimits(), **{key.name: value})
    dumped = dump_config(config)
    assert dumped["iscsi"] == {key.name: key.spelled(value)}
    assert parse_config(json.loads(json.dumps(dumped))) == config


def test_iscsi_sizes_take_suffixes_and_seconds_take_integers():
    config = parse(iscsi={"max_pending_send_bytes": "16M", "max_text_bytes": 16384, "login_timeout": 5})
    assert config.iscsi.max_pending_send_bytes == 16 << 20
    assert config.iscsi.max_text_bytes == 16384
    assert config.iscsi.login_timeout == 5.0 and isinstance(config.iscsi.login_timeout, float)
    assert dump_config(config)["iscsi"] == {"max_pending_send_bytes": "16M", "max_text_bytes": "16K",
                                            "login_timeout": 5.0}


def test_a_key_set_to_its_default_is_not_dumped():
    assert "iscsi" not in dump_config(parse(iscsi={"max_connections": 1024, "login_timeout": 15}))


@pytest.mark.parametrize("iscsi, message", [
    ({"max_connections": 0}, "iscsi.max_connections: must be at least 1, got 0"),
    ({"max_connections": -5}, "iscsi.max_connections: must be at least 1, got -5"),
    ({"max_sessions": 10.0}, "iscsi.max_sessions: expected an integer, got a number (10.0)"),
    ({"max_sessions": "10"}, 'iscsi.max_sessions: expected an integer, got a string ("10")'),
    ({"max_tasks_per_connection": True}, "iscsi.max_tasks_per_connection: expected an integer, got true"),
    ({"login_timeout": 0}, "iscsi.login_timeout: expected seconds, more than 0, got a number (0)"),
    ({"failed_login_window": "60"}, 'iscsi.failed_login_window: expected seconds, more than 0, got a string ("60")'),
    ({"max_data_out_bytes": 0}, "iscsi.max_data_out_bytes: must be positive"),
    ({"max_data_out_bytes": "64MB"}, 'iscsi.max_data_out_bytes: invalid size "64MB"'),
    ({"max_data_out_bytes": 1.5}, "iscsi.max_data_out_bytes: expected a size (integer or string), got a number (1.5)"),
    ({"max_connections_per_address": 2000},
     "iscsi: max_connections_per_address must not exceed max_connections"),
    ({"max_sessions": 16}, "iscsi: max_sessions_per_address must not exceed max_sessions"),
    ({"max_text_bytes": "4K"}, "iscsi: max_text_bytes must be at least 8192"),
    ({"max_tasks_per_connection": 70000}, "iscsi: max_tasks_per_connection must be at most 65536"),
    ({"max_sesions": 1}, 'iscsi.max_sesions: unknown key (did you mean "max_sessions"?)'),
    ([], "iscsi: expected an object, got an array"),
])
def test_iscsi_problems_name_their_path(iscsi, message):
    found = problems(iscsi=iscsi)
    assert any(problem.startswith(message) for problem in found), found


def test_per_key_problems_are_all_reported_and_hide_the_cross_field_check():
    assert problems(iscsi={"max_connections": 0, "login_timeout": -1}) == [
        "iscsi.max_connections: must be at least 1, got 0",
        "iscsi.login_timeout: expected seconds, more than 0, got a number (-1)",
    ]


# -- both -----------------------------------------------------------------------------------------


def test_reading_a_config_imports_neither_the_copy_manager_nor_the_iscsi_server():
    code = ("import sys, odxtarget.config; "
            "print(sorted(m for m in sys.modules if m.startswith('odxtarget.')))")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                               timeout=60, check=True)
    loaded = set(eval(completed.stdout))
    assert "odxtarget.copy.limits" in loaded and "odxtarget.transport.iscsi.limits" in loaded
    assert not loaded & {"odxtarget.copy.manager", "odxtarget.transport.iscsi.server",
                         "odxtarget.transport.iscsi.connection", "odxtarget.storage.extents"}


def _documented_defaults(heading: str) -> dict[str, object]:
    """Key -> default cell (decoded JSON) of the table under ``heading`` in docs/configuration.md."""
    section = DOC.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| `([^`]+)` \|", section, re.M)
    return {key: json.loads(default) for key, default in rows}


@pytest.mark.parametrize("heading, section", [("ODX limits", ODX_SECTION), ("iSCSI limits", ISCSI_SECTION)])
def test_the_documented_tables_list_every_key_with_its_default(heading, section):
    documented = _documented_defaults(heading)
    assert list(documented) == list(section.key_names)
    for key in section.keys:
        value = documented[key.name]
        assert (parse_size(value) if key.kind == "size" else value) == key.default, key.name


def test_daemon_wide_caps_below_the_per_initiator_defaults_are_accepted():
    """A per-initiator quota above the daemon-wide cap simply never binds: configs written before
    the quotas existed (``max_rod_bytes: 1G``) stay valid."""
    config = parse(odx={"max_rod_bytes": "1G"})
    limits = CopyLimits(**config.odx.limits_overrides())
    assert (limits.max_rod_bytes, limits.max_rod_bytes_per_initiator) == (1 << 30, 16 << 30)
