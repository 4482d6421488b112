"""The Prometheus endpoint of a real daemon (docs/metrics.md): reads and writes through libiscsi,
a POPULATE TOKEN + WRITE USING TOKEN copy, a refused copy and a refused login move the scraped
counters by exactly what was done; a metrics port in use stops startup with one line."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest

from odxtarget.metrics.endpoint import MIN_RENDER_INTERVAL_SECONDS
from tests.integration.odx.odx_support import GOOD, OdxSession, check, pattern
from tests.support import libiscsi
from tests.support.daemon import MIB, DaemonProcess, DaemonSpec, DaemonStartError, LunSpec, free_port
from tests.unit.metrics.scrape import Samples, parse_exposition, value, with_name

pytestmark = pytest.mark.integration

BLOCK = 512
LUN_BYTES = 64 * MIB
INITIATOR = "iqn.2026-11.org.odxtarget.test:metrics"


_last_scrape = [0.0]


def scrape(url: str) -> Samples:
    """A fresh rendering: the endpoint serves one rendering again for a second."""
    wait = _last_scrape[0] + MIN_RENDER_INTERVAL_SECONDS - time.monotonic()
    if wait > 0:
        time.sleep(wait + 0.05)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    _last_scrape[0] = time.monotonic()
    return parse_exposition(text)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - before.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def daemon(tmp_path: Path):
    port = free_port()
    spec = DaemonSpec(luns=[LunSpec(lun=0, size=LUN_BYTES), LunSpec(lun=1, size=LUN_BYTES)],
                      extra_config={"metrics": {"ip": "127.0.0.1", "port": port}})
    process = DaemonProcess(spec, tmp_path / "daemon")
    process.metrics_url = f"http://127.0.0.1:{port}/metrics"
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_scraped_counters_move_by_exactly_what_the_initiator_did(daemon):
    url = daemon.metrics_url
    before = scrape(url)
    assert value(before, "odxtarget_iscsi_sessions", target=daemon.iqn) == 0
    assert with_name(before, "odxtarget_lun_info") == {
        (("lun", "0"), ("storage_object", "disk0"), ("target", daemon.iqn)): 1.0,
        (("lun", "1"), ("storage_object", "disk1"), ("target", daemon.iqn)): 1.0,
    }

    with OdxSession(daemon, INITIATOR) as session:
        assert value(scrape(url), "odxtarget_iscsi_sessions", target=daemon.iqn) == 1
        source = pattern(MIB + 64 * 1024, seed=7)
        session.write(0, 0, source)                           # WRITE(16) x2: 1 MiB, then 64 KiB
        session.write(1, 4096, pattern(8 * BLOCK, seed=8))    # WRITE(16) x1: 4 KiB
        assert session.read(0, 0, len(source)) == source      # READ(16) x2
        session.read(1, 4096, 3 * BLOCK)                      # READ(16) x1: 1.5 KiB

        copy_blocks = MIB // BLOCK
        token = session.token(0, [(0, copy_blocks)])          # POPULATE TOKEN on disk0
        _, result = session.write_using(1, token, [(8192, copy_blocks)])   # WRITE USING TOKEN into disk1
        check(result, GOOD, "WRITE USING TOKEN")
        _, refused = session.populate(0, [(LUN_BYTES // BLOCK, 8)])        # past the end of disk0
        assert refused.status == libiscsi.STATUS_CHECK_CONDITION
        refused_sense = f"{refused.sense_key:X}/{refused.asc:02X}/{refused.ascq:02X}"
        assert session.read(1, 8192, MIB) == source[:MIB]   # READ(16) x1, the copy landed
        during = scrape(url)

    with pytest.raises(libiscsi.LoginError):
        libiscsi.connect(daemon.host, daemon.port, daemon.iqn + "-absent", initiator_name=INITIATOR)
    after = scrape(url)

    # I/O per storage object (docs/metrics.md, "Logical units")
    lu = "odxtarget_lu_commands_total"
    assert delta(during, before, lu, storage_object="disk0", op="write") == 2
    assert delta(during, before, lu, storage_object="disk1", op="write") == 1
    assert delta(during, before, lu, storage_object="disk0", op="read") == 2
    assert delta(during, before, lu, storage_object="disk1", op="read") == 2
    moved = "odxtarget_lu_bytes_total"
    assert delta(during, before, moved, storage_object="disk0", op="write") == MIB + 64 * 1024
    assert delta(during, before, moved, storage_object="disk1", op="write") == 8 * BLOCK
    assert delta(during, before, moved, storage_object="disk0", op="read") == MIB + 64 * 1024
    assert delta(during, before, moved, storage_object="disk1", op="read") == 3 * BLOCK + MIB
    latency = "odxtarget_lu_command_duration_seconds_count"
    assert delta(during, before, latency, storage_object="disk0", op="read") == 2
    assert delta(during, before, latency, storage_object="disk1", op="write") == 1
    assert value(during, "odxtarget_lu_command_duration_seconds_sum", storage_object="disk0", op="write") > 0

    # ODX (docs/metrics.md, "ODX")
    odx = "odxtarget_odx_commands_total"
    assert delta(during, before, odx, storage_object="disk0", command="populate_token") == 2
    assert delta(during, before, odx, storage_object="disk1", command="write_using_token") == 1
    assert delta(during, before, odx, storage_object="disk0", command="write_using_token") == 0
    assert delta(during, before, "odxtarget_odx_tokens_created_total", storage_object="disk0") == 1
    by_method = {dict(labels)["method"]: v for labels, v in with_name(during, "odxtarget_odx_bytes_total").items()
                 if dict(labels)["storage_object"] == "disk1"}
    assert set(by_method) == {"reflink", "copy_file_range", "read_write", "zero"}
    assert sum(by_method.values()) == MIB
    assert with_name(during, "odxtarget_odx_failures_total") == {
        (("sense", refused_sense), ("storage_object", "disk0")): 1.0}

    # sessions and logins (docs/metrics.md, "iSCSI")
    assert value(after, "odxtarget_iscsi_sessions", target=daemon.iqn) == 0
    assert with_name(after, "odxtarget_iscsi_login_failures_total") == {(("reason", "not_found"),): 1.0}
    assert value(after, "process_cpu_seconds_total") > 0


def test_a_metrics_port_in_use_stops_startup_with_one_line(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = DaemonSpec(luns=[LunSpec(lun=0, size=MIB)], extra_config={"metrics": {"ip": "127.0.0.1", "port": port}})
        process = DaemonProcess(spec, tmp_path / "daemon")
        try:
            with pytest.raises(DaemonStartError):
                process.start(timeout=20)
        finally:
            process.stop()
        errors = [line for line in process.log_text().splitlines() if "error" in line.lower()]
    assert errors == [f"odxtarget: error: metrics endpoint 127.0.0.1:{port}: cannot listen: the port is already in use"]
    assert process.process.returncode == 1
