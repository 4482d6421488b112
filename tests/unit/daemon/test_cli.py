"""The odxtarget command line: argument parsing, messages and exit codes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from odxtarget import cli, daemon
from odxtarget.config import demo_config_dict, load_config
from odxtarget.logging_setup import configure_logging

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_demo_config_writes_a_valid_private_config(tmp_path, capsys):
    directory = tmp_path / "run"
    assert cli.main(["demo-config", "--dir", str(directory), "--port", "3270"]) == 0
    path = directory / "odxtarget.json"
    assert json.loads(path.read_text()) == demo_config_dict(port=3270)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    config = load_config(str(path))
    assert [so.extents[0].path for so in config.storage_objects] == [
        str(directory / "disk0.img"), str(directory / "disk1.img"),
    ]
    assert [so.size for so in config.storage_objects] == [1 << 30, 1 << 30]
    assert config.targets[0].portals[0].port == 3270
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {path}", f"start the target with: odxtarget serve --config {path}",
        "its metrics: http://127.0.0.1:9796/metrics (docs/metrics.md)",
    ]
    assert config.metrics is not None and (config.metrics.ip, config.metrics.port) == ("127.0.0.1", 9796)


def test_demo_config_does_not_overwrite_without_force(tmp_path, capsys):
    path = tmp_path / "odxtarget.json"
    path.write_text("mine")
    assert cli.main(["demo-config", "--dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"odxtarget: error: {path} already exists (use --force to overwrite it)\n"
    assert path.read_text() == "mine"
    assert cli.main(["demo-config", "--dir", str(tmp_path), "--force"]) == 0
    assert json.loads(path.read_text())["targets"][0]["iqn"] == "iqn.2026-11.org.odxtarget:demo"


def test_demo_config_rejects_a_bad_port(tmp_path, capsys):
    assert cli.main(["demo-config", "--dir", str(tmp_path), "--port", "70000"]) == 1
    assert "targets[0].portals[0].port: must be between 0 and 65535, got 70000" in capsys.readouterr().err
    assert not (tmp_path / "odxtarget.json").exists()


def test_check_config_ok(tmp_path, capsys):
    cli.main(["demo-config", "--dir", str(tmp_path)])
    capsys.readouterr()
    assert cli.main(["check-config", str(tmp_path / "odxtarget.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{tmp_path}/odxtarget.json: OK: 2 storage objects, 1 target, 2 LUNs"
    assert out[1] == "target iqn.2026-11.org.odxtarget:demo tpgt 1 on 127.0.0.1:3260: demo mode (any initiator), 2 LUNs"
    assert not (tmp_path / "disk0.img").exists()  # checking creates nothing


def test_check_config_dump_prints_the_resolved_config(tmp_path, capsys):
    cli.main(["demo-config", "--dir", str(tmp_path)])
    capsys.readouterr()
    assert cli.main(["check-config", "--dump", str(tmp_path / "odxtarget.json")]) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["storage_objects"][0]["extents"][0]["path"] == str(tmp_path / "disk0.img")
    assert dumped["state_dir"] == str(tmp_path)


def test_check_config_lists_every_problem_one_per_line(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema_version": 1, "log_level": "loud", "targets": [{"iqn": "x"}]}))
    assert cli.main(["check-config", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f'odxtarget: error: {path}: log_level: "loud" is not supported (expected "debug", "info", "warning", '
        '"error", "critical")',
        f'odxtarget: error: {path}: targets[0].iqn: "x" must start with "iqn.", "eui." or "naa." (RFC 3720 3.2.6.3)',
    ]


def test_serve_with_a_missing_config_says_so_in_one_line(tmp_path, capsys):
    path = tmp_path / "nope.json"
    assert cli.main(["serve", "--config", str(path)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"odxtarget: error: {path}: config file not found (write one with `odxtarget demo-config --dir DIR`, "
        "or pass --config FILE)"
    )


def test_serve_reports_daemon_errors_in_one_line(tmp_path, capsys, monkeypatch):
    cli.main(["demo-config", "--dir", str(tmp_path)])
    seen = {}

    def failing_run(config):
        seen["config"] = config
        raise daemon.DaemonError("cannot start the iSCSI server: address already in use")

    monkeypatch.setattr(daemon, "run", failing_run)
    assert cli.main(["serve", "--config", str(tmp_path / "odxtarget.json")]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "odxtarget: error: cannot start the iSCSI server: address already in use"
    )
    assert seen["config"].targets[0].iqn == "iqn.2026-11.org.odxtarget:demo"


def test_serve_log_level_flag_overrides_the_config(tmp_path, monkeypatch):
    cli.main(["demo-config", "--dir", str(tmp_path)])
    levels = []
    monkeypatch.setattr(daemon, "run", lambda config: levels.append(logging.getLogger().level))
    assert cli.main(["serve", "--config", str(tmp_path / "odxtarget.json"), "--log-level", "DEBUG"]) == 0
    assert cli.main(["serve", "--config", str(tmp_path / "odxtarget.json")]) == 0  # config says info
    assert levels == [logging.DEBUG, logging.INFO]


@pytest.mark.parametrize("argv", [[], ["serve", "--log-level", "loud"], ["demo-config"], ["bogus"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as leaving:
        cli.main(argv)
    assert leaving.value.code == 2
    assert "usage: odxtarget" in capsys.readouterr().err


def test_log_lines_have_timestamp_level_and_logger_name():
    stream = io.StringIO()
    configure_logging("info", stream)
    configure_logging("info", stream)  # configuring twice must not double every line
    logging.getLogger("odxtarget.test").info("hello %s", "there")
    logging.getLogger("odxtarget.test").debug("not shown")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO    odxtarget\.test: hello there", lines[0])


def test_python_dash_m_runs_the_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "odxtarget", "check-config", str(REPO / "examples" / "demo.json")],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{REPO / 'examples' / 'demo.json'}: OK: 2 storage objects")
