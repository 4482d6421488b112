"""The collector (odxtarget/metrics/collector.py): the series a scrape shows for real logical
units, a real copy manager and a real (unstarted) iSCSI server's registry and admission."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import odxtarget
from odxtarget.config import DaemonConfig, LunMapping, TargetConfig
from odxtarget.metrics import DaemonCollector
from odxtarget.scsi.io_stats import LATENCY_BUCKETS
from odxtarget.transport.iscsi.negotiation import SessionParameters
from odxtarget.transport.iscsi.server import IscsiServer
from tests.support.copy_cdbs import read16
from tests.unit.copy.odx_helpers import MIB, Env, pattern, sense_triplet
from tests.unit.metrics.scrape import parse_exposition, value, with_name

IQN = "iqn.2026-01.org.test:tgt"
OTHER_IQN = "iqn.2026-01.org.test:idle"
BLOCK = 512


@dataclass
class FakeDaemon:
    """The attributes the collector reads (``MetricsSource``), as ``odxtarget.daemon.Daemon`` has them."""

    config: DaemonConfig
    logical_units: dict = field(default_factory=dict)
    copy_manager: object = None
    server: object = None


@pytest.fixture
def env(tmp_path):
    environment = Env(str(tmp_path))
    environment.add_lu(0, size=8 * MIB, name="disk0")
    environment.add_lu(1, size=8 * MIB, name="disk1")
    yield environment
    environment.close()


def daemon_over(env: Env, *, server=None) -> FakeDaemon:
    targets = [TargetConfig(IQN, luns=[LunMapping(0, "disk0"), LunMapping(1, "disk1")]), TargetConfig(OTHER_IQN)]
    return FakeDaemon(DaemonConfig(targets=targets),
                      {lu.name: lu for lu in env.luns.values()}, env.manager, server)


def scrape(daemon: FakeDaemon):
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    return parse_exposition(generate_latest(registry).decode())


def test_reads_and_writes_are_counted_per_storage_object(env):
    before = scrape(daemon_over(env))
    env.write(0, 16, pattern(64 * 1024, 1))
    env.write(0, 0, pattern(BLOCK, 2))
    env.ok(read16(0, 8), lun=1)
    env.run(read16(16 * 1024 * 2, 1), lun=1)           # past the end: a failed read, no bytes
    samples = scrape(daemon_over(env))
    delta = {key: samples[key] - before.get(key, 0) for key in samples}
    assert value(delta, "odxtarget_lu_commands_total", storage_object="disk0", op="write") == 2
    assert value(delta, "odxtarget_lu_bytes_total", storage_object="disk0", op="write") == 64 * 1024 + BLOCK
    assert value(delta, "odxtarget_lu_commands_total", storage_object="disk0", op="read") == 0
    assert value(delta, "odxtarget_lu_commands_total", storage_object="disk1", op="read") == 2
    assert value(delta, "odxtarget_lu_bytes_total", storage_object="disk1", op="read") == 8 * BLOCK
    assert value(delta, "odxtarget_lu_bytes_total", storage_object="disk1", op="write") == 0


def test_latency_is_a_histogram_per_storage_object_and_kind(env):
    env.write(0, 0, pattern(BLOCK, 3))
    samples = scrape(daemon_over(env))
    for op in ("read", "write", "other"):
        buckets = {dict(labels)["le"]: v
                   for labels, v in with_name(samples, "odxtarget_lu_command_duration_seconds_bucket").items()
                   if dict(labels)["storage_object"] == "disk0" and dict(labels)["op"] == op}
        assert len(buckets) == len(LATENCY_BUCKETS) + 1
        assert buckets["+Inf"] == value(samples, "odxtarget_lu_command_duration_seconds_count",
                                        storage_object="disk0", op=op)
        ordered = [buckets[le] for le in sorted(buckets, key=float)]
        assert ordered == sorted(ordered)                 # cumulative
    assert value(samples, "odxtarget_lu_command_duration_seconds_count", storage_object="disk0", op="write") == 1
    # the TEST UNIT READYs Env sent for two nexuses
    assert value(samples, "odxtarget_lu_command_duration_seconds_count", storage_object="disk0", op="other") == 2
    assert value(samples, "odxtarget_lu_command_duration_seconds_sum", storage_object="disk0", op="write") > 0


def test_lun_info_joins_targets_and_luns_to_storage_objects(env):
    samples = scrape(daemon_over(env))
    assert with_name(samples, "odxtarget_lun_info") == {
        (("lun", "0"), ("storage_object", "disk0"), ("target", IQN)): 1.0,
        (("lun", "1"), ("storage_object", "disk1"), ("target", IQN)): 1.0,
    }


def test_odx_commands_bytes_by_method_and_failures_by_sense(env):
    data = pattern(MIB, 4)
    env.write(0, 0, data)
    token = env.token(0, [(0, MIB // BLOCK)])
    result = env.write_using(1, token, [(0, MIB // BLOCK)])
    assert result.status == 0
    env.settle()
    assert env.read(1, 0, MIB // BLOCK) == data
    failed = env.populate(0, [(16 * 1024 * 2, 8)], list_id=9)   # past the end of disk0
    key, asc, ascq = sense_triplet(failed)
    samples = scrape(daemon_over(env))
    assert value(samples, "odxtarget_odx_commands_total", storage_object="disk0", command="populate_token") == 2
    assert value(samples, "odxtarget_odx_commands_total", storage_object="disk1", command="write_using_token") == 1
    assert value(samples, "odxtarget_odx_commands_total", storage_object="disk1", command="populate_token") == 0
    assert value(samples, "odxtarget_odx_tokens_created_total", storage_object="disk0") == 1
    moved = {dict(labels)["method"]: v for labels, v in with_name(samples, "odxtarget_odx_bytes_total").items()
             if dict(labels)["storage_object"] == "disk1"}
    assert set(moved) == {"reflink", "copy_file_range", "read_write", "zero"}
    assert sum(moved.values()) == MIB
    assert value(samples, "odxtarget_odx_failures_total", storage_object="disk0",
                 sense=f"{key:X}/{asc:02X}/{ascq:02X}") == 1
    assert len(with_name(samples, "odxtarget_odx_failures_total")) == 1


def test_sessions_per_target_and_refused_logins_by_reason(env):
    target_config = TargetConfig(IQN, luns=[LunMapping(0, "disk0")])
    server = IscsiServer([(target_config, env.target)])
    registry = server.registry
    for isid in (b"\x80\0\0\0\0\1", b"\x80\0\0\0\0\2"):
        registry.create(session_type="Normal", initiator_name="iqn.2026-01.org.test:init", initiator_alias=None,
                        isid=isid, target_name=IQN, parameters=SessionParameters(), exp_cmd_sn=1)
    registry.create(session_type="Discovery", initiator_name="iqn.2026-01.org.test:init", initiator_alias=None,
                    isid=b"\x80\0\0\0\0\3", target_name=None, parameters=SessionParameters(), exp_cmd_sn=1)
    registry.admission.login_failed("10.0.0.1", 0.0, "authentication_failure")
    registry.admission.login_failed("10.0.0.2", 0.0, "authentication_failure")
    registry.admission.login_refused("out_of_resources")
    samples = scrape(daemon_over(env, server=server))
    assert with_name(samples, "odxtarget_iscsi_sessions") == {(("target", IQN),): 2.0, (("target", OTHER_IQN),): 0.0}
    assert with_name(samples, "odxtarget_iscsi_login_failures_total") == {
        (("reason", "authentication_failure"),): 2.0, (("reason", "out_of_resources"),): 1.0}
    (session,) = [s for s in registry.sessions() if s.isid == b"\x80\0\0\0\0\1"]
    registry.close(session, logged_out=True, reason="test")
    assert value(scrape(daemon_over(env, server=server)), "odxtarget_iscsi_sessions", target=IQN) == 1


def test_a_daemon_without_copy_manager_or_live_front_end_still_scrapes(env):
    daemon = daemon_over(env)
    daemon.copy_manager = None
    samples = scrape(daemon)
    assert value(samples, "odxtarget_build_info", version=odxtarget.__version__) == 1
    assert not with_name(samples, "odxtarget_odx_commands_total")
    assert not with_name(samples, "odxtarget_iscsi_sessions")
    assert value(samples, "odxtarget_lu_commands_total", storage_object="disk0", op="read") == 0


def test_logical_units_added_and_removed_live_appear_and_go(env):
    daemon = daemon_over(env)
    lu1 = daemon.logical_units.pop("disk1")
    assert not [k for k in with_name(scrape(daemon), "odxtarget_lu_commands_total") if ("storage_object", "disk1") in k]
    daemon.logical_units["disk1"] = lu1
    assert value(scrape(daemon), "odxtarget_lu_commands_total", storage_object="disk1", op="write") == 0
