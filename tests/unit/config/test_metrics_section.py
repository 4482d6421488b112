"""The optional "metrics" section: where the Prometheus endpoint listens (docs/metrics.md)."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odxtarget.config import ConfigError, MetricsConfig, demo_config_dict, dump_config, parse_config

SOURCE = "/etc/odxtarget/config.json"


def config_with(metrics) -> dict:
    obj = {
        "schema_version": 1,
        "storage_objects": [{"name": "disk0", "size": "1M"}],
        "targets": [{"iqn": "iqn.2026-11.org.odxtarget:t", "demo_mode": True,
                     "luns": [{"lun": 0, "storage_object": "disk0"}]}],
    }
    if metrics is not ...:
        obj["metrics"] = metrics
    return obj


def problems(metrics) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(metrics), SOURCE)
    return caught.value.problems


@pytest.mark.parametrize("metrics", [..., None], ids=["absent", "null"])
def test_absent_or_null_means_no_endpoint(metrics):
    config = parse_config(config_with(metrics), SOURCE)
    assert config.metrics is None
    assert "metrics" not in dump_config(config)


@pytest.mark.parametrize("metrics, expected", [
    ({}, MetricsConfig("127.0.0.1", 9796)),
    ({"ip": "127.0.0.1", "port": 9796}, MetricsConfig("127.0.0.1", 9796)),
    ({"port": 0}, MetricsConfig("127.0.0.1", 0)),
    ({"ip": "::1", "port": 65535}, MetricsConfig("::1", 65535)),
    ({"ip": "0:0:0:0:0:0:0:1"}, MetricsConfig("::1", 9796)),      # normal spelling
])
def test_good_sections(metrics, expected):
    config = parse_config(config_with(metrics), SOURCE)
    assert config.metrics == expected
    dumped = dump_config(config)
    assert dumped["metrics"] == {"ip": expected.ip, "port": expected.port}
    assert parse_config(json.loads(json.dumps(dumped)), SOURCE) == config


@pytest.mark.parametrize("metrics, expected", [
    ("127.0.0.1:9796", ['metrics: expected an object, got a string ("127.0.0.1:9796")']),
    ([], ["metrics: expected an object, got an array"]),
    ({"prot": 9796}, ['metrics.prot: unknown key (did you mean "port"?)']),
    ({"address": "::1"}, ["metrics.address: unknown key (expected one of: ip, port)"]),
    ({"ip": "localhost"}, ['metrics.ip: "localhost" is not an IPv4 or IPv6 address']),
    ({"ip": ""}, ["metrics.ip: must not be empty"]),
    ({"ip": 127}, ["metrics.ip: expected a string, got a number (127)"]),
    ({"port": 70000}, ["metrics.port: must be between 0 and 65535, got 70000"]),
    ({"port": -1}, ["metrics.port: must be between 0 and 65535, got -1"]),
    ({"port": "9796"}, ['metrics.port: expected an integer, got a string ("9796")']),
    ({"port": True}, ["metrics.port: expected an integer, got true"]),
    ({"ip": "nowhere", "port": 1.5}, ['metrics.ip: "nowhere" is not an IPv4 or IPv6 address',
                                      "metrics.port: expected an integer, got a number (1.5)"]),
])
def test_bad_sections_name_the_value_at_fault(metrics, expected):
    assert problems(metrics) == expected


def test_an_address_beyond_this_host_is_legal_but_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="odxtarget.config"):
        config = parse_config(config_with({"ip": "0.0.0.0", "port": 9100}), SOURCE)
    assert config.metrics == MetricsConfig("0.0.0.0", 9100)
    assert any("metrics.ip: 0.0.0.0 serves the metrics" in record.getMessage() for record in caplog.records)


def test_a_loopback_address_is_not_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="odxtarget.config"):
        parse_config(config_with({"ip": "127.0.0.1"}), SOURCE)
    assert not [record for record in caplog.records if "metrics" in record.getMessage()]


def test_the_demo_serves_metrics_on_loopback_port_9796():
    assert parse_config(demo_config_dict(), SOURCE).metrics == MetricsConfig("127.0.0.1", 9796)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 70000) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
SECTIONS = st.dictionaries(st.sampled_from(["ip", "port", "other"]), JSON_VALUES | st.ip_addresses().map(str),
                           max_size=3) | JSON_VALUES


@settings(max_examples=300, deadline=None)
@given(SECTIONS)
def test_any_section_is_accepted_and_round_trips_or_refused_with_metrics_problems(metrics):
    try:
        config = parse_config(config_with(metrics), SOURCE)
    except ConfigError as error:
        assert error.problems and all(problem.startswith("metrics") for problem in error.problems)
        return
    assert parse_config(dump_config(config), SOURCE) == config
    if config.metrics is not None:
        assert 0 <= config.metrics.port <= 65535
