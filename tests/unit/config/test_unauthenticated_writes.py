"""A demo-mode target anyone may write to without CHAP is refused on a non-loopback portal
unless the file says allow_unauthenticated_writes (docs/security.md, "Demo mode")."""

from __future__ import annotations

import copy

import pytest

from odxtarget.config import ConfigError, dump_config, parse_config
from odxtarget.daemon import summary_lines, unauthenticated_write_warnings

IQN = "iqn.2026-11.org.example:open"
SOURCE = "/etc/odxtarget/config.json"


def config(ip: str = "192.0.2.10", **target_keys) -> dict:
    return {
        "schema_version": 1,
        "storage_objects": [{"name": "disk0", "size": "1M", "extents": [{"path": "/tmp/x-disk0.img"}]}],
        "targets": [{"iqn": IQN, "portals": [{"ip": ip, "port": 3260}],
                     "luns": [{"lun": 0, "storage_object": "disk0"}], "demo_mode": True, **target_keys}],
    }


def problems(obj: dict) -> list[str]:
    with pytest.raises(ConfigError) as failure:
        parse_config(obj, SOURCE)
    return failure.value.problems


@pytest.mark.parametrize("ip", ["192.0.2.10", "0.0.0.0", "::", "2001:db8::1"])
def test_an_open_writable_target_on_a_reachable_portal_is_refused(ip):
    [problem] = problems(config(ip))
    shown = f"[{ip}]:3260" if ":" in ip else f"{ip}:3260"
    assert problem == (f"targets[0]: target {IQN} lets any initiator write without CHAP on {shown}"
                       ' (demo_mode true, no chap, writable LUNs): set "chap", or'
                       ' "demo_mode_write_protect": true, or ACLs with demo_mode false, or'
                       ' loopback portals only, or "allow_unauthenticated_writes": true')


def test_only_the_reachable_portals_are_named():
    obj = config()
    obj["targets"][0]["portals"].insert(0, {"ip": "127.0.0.1", "port": 3260})
    [problem] = problems(obj)
    assert "on 192.0.2.10:3260 (" in problem and "127.0.0.1" not in problem


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.2", "::1"])
def test_loopback_portals_are_fine(ip):
    assert parse_config(config(ip), SOURCE).targets[0].portals[0].ip == ip


@pytest.mark.parametrize("keys", [
    {"chap": {"userid": "user", "password": "twelve-chars"}},
    {"demo_mode_write_protect": True},
    {"allow_unauthenticated_writes": True},
])
def test_chap_write_protect_or_the_explicit_key_make_it_acceptable(keys):
    parsed = parse_config(config(**keys), SOURCE)
    assert parsed.targets[0].demo_mode is True


def test_read_only_storage_and_acl_only_targets_are_not_open_writes():
    read_only = config()
    read_only["storage_objects"][0]["read_only"] = True
    assert parse_config(read_only, SOURCE).targets
    acl_only = config(demo_mode=False, acls=[{"initiator": "iqn.2026-11.org.example:host"}])
    assert parse_config(acl_only, SOURCE).targets


def test_the_keys_must_be_booleans():
    [problem] = problems(config("127.0.0.1", demo_mode_write_protect="yes"))
    assert problem.startswith("targets[0].demo_mode_write_protect: expected true or false")


def test_the_keys_round_trip_and_are_written_only_when_set():
    parsed = parse_config(config(allow_unauthenticated_writes=True, demo_mode_write_protect=True), SOURCE)
    dumped = dump_config(parsed)
    assert dumped["targets"][0]["allow_unauthenticated_writes"] is True
    assert dumped["targets"][0]["demo_mode_write_protect"] is True
    again = parse_config(copy.deepcopy(dumped), SOURCE)
    assert dump_config(again) == dumped
    plain = dump_config(parse_config(config("127.0.0.1"), SOURCE))
    assert "allow_unauthenticated_writes" not in plain["targets"][0]
    assert "demo_mode_write_protect" not in plain["targets"][0]


def test_the_daemon_warns_for_each_allowed_open_portal():
    parsed = parse_config(config(allow_unauthenticated_writes=True), SOURCE)
    assert unauthenticated_write_warnings(parsed) == [
        f"target {IQN} on 192.0.2.10:3260: any initiator may log in without CHAP and write"
        " (allow_unauthenticated_writes is set)"]
    assert unauthenticated_write_warnings(parse_config(config("127.0.0.1"), SOURCE)) == []


def test_the_summary_says_demo_sessions_are_write_protected():
    parsed = parse_config(config(demo_mode_write_protect=True), SOURCE)
    assert "demo mode (any initiator, write-protected)" in summary_lines(parsed)[0]
