"""The config's optional "odx" section: validated like the rest of the file (every problem
reported with its JSON path), round-tripped by dump_config, and refused by the daemon at
startup with one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from odxtarget.config import ConfigError, OdxConfig, dump_config, parse_config
from odxtarget.copy import CopyLimits
from tests.support.daemon import REPO_ROOT, DaemonProcess, DaemonSpec

pytestmark = [pytest.mark.integration]


def parse(odx) -> object:
    return parse_config({"schema_version": 1, "odx": odx})


def test_values_reach_copy_limits_and_round_trip():
    config = parse({"max_range_descriptors": 8, "default_inactivity_timeout": 2, "max_inactivity_timeout": 30,
                    "max_token_transfer_bytes": "32M", "optimal_transfer_bytes": 4 << 20,
                    "write_using_token_budget": 0.25, "max_rod_bytes": "1G", "background_step_bytes": "64K",
                    "max_tokens_per_initiator": 100, "max_rod_bytes_per_initiator": "256M"})
    limits = CopyLimits(**config.odx.limits_overrides())
    assert (limits.max_range_descriptors, limits.default_inactivity_timeout, limits.max_inactivity_timeout,
            limits.max_token_transfer_bytes, limits.optimal_transfer_bytes, limits.write_using_token_budget,
            limits.max_rod_bytes, limits.background_step_bytes, limits.max_tokens_per_initiator,
            limits.max_rod_bytes_per_initiator) == (
        8, 2, 30, 32 << 20, 4 << 20, 0.25, 1 << 30, 64 << 10, 100, 256 << 20)
    assert parse_config(dump_config(config)) == config
    assert dump_config(config)["odx"]["max_token_transfer_bytes"] == "32M"


def test_absent_section_keeps_defaults_and_is_not_dumped():
    config = parse_config({"schema_version": 1})
    assert config.odx == OdxConfig() and CopyLimits(**config.odx.limits_overrides()) == CopyLimits()
    assert "odx" not in dump_config(config)


@pytest.mark.parametrize("odx,message", [
    ({"max_range_descriptors": 0}, "odx.max_range_descriptors: must be between 1 and 65535"),
    ({"default_inactivity_timeout": "60"}, "odx.default_inactivity_timeout: expected an integer"),
    ({"default_inactivity_timeout": 700}, "odx.default_inactivity_timeout: must not exceed max_inactivity_timeout"),
    ({"optimal_transfer_bytes": "512M"}, "odx.optimal_transfer_bytes: must not exceed max_token_transfer_bytes"),
    ({"max_rod_bytes": 1000}, "odx.max_rod_bytes: must be a positive multiple of 4096"),
    ({"background_step_bytes": "lots"}, "odx.background_step_bytes: invalid size"),
    ({"write_using_token_budget": 0}, "odx.write_using_token_budget: expected seconds"),
    ({"write_using_token_budget": True}, "odx.write_using_token_budget: expected seconds"),
    ({"time_budget": 1}, "odx.time_budget: unknown key"),
    ([], "odx: expected an object"),
])
def test_problems_name_their_path(odx, message):
    with pytest.raises(ConfigError) as raised:
        parse(odx)
    assert any(problem.startswith(message) for problem in raised.value.problems), raised.value.problems


def test_check_config_reports_a_bad_section_in_one_line(tmp_path):
    daemon = DaemonProcess(DaemonSpec(extra_config={"odx": {"optimal_transfer_bytes": "1G"}}), tmp_path)
    completed = subprocess.run([sys.executable, "-m", "odxtarget", "check-config", str(daemon.config_path)],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode != 0
    assert "odx.optimal_transfer_bytes" in completed.stderr and "Traceback" not in completed.stderr
