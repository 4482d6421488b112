"""The order in which odxtargetcli looks for the control socket (odxtarget.admin.locate)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from odxtarget.admin.locate import SocketNotFound, locate_control_socket, searched_sockets
from odxtarget.admin.protocol import AdminError, SOCKET_ENVIRONMENT



def test_the_flag_wins_over_everything(tmp_path: Path) -> None:
    chosen = locate_control_socket("/flag.sock", str(tmp_path / "missing.json"),
                                   environ={SOCKET_ENVIRONMENT: "/env.sock"}, cwd=str(tmp_path),
                                   exists=lambda path: True)
    assert chosen == "/flag.sock"


def test_the_environment_comes_before_config_and_search(tmp_path: Path) -> None:
    chosen = locate_control_socket(None, str(tmp_path / "missing.json"),
                                   environ={SOCKET_ENVIRONMENT: "/env.sock"}, cwd=str(tmp_path),
                                   exists=lambda path: True)
    assert chosen == "/env.sock"


def test_a_config_file_gives_its_state_dir_socket(tmp_path: Path) -> None:
    config = tmp_path / "odxtarget.json"
    config.write_text(json.dumps({"schema_version": 1, "state_dir": "state", "storage_objects": [],
                                  "targets": []}))
    chosen = locate_control_socket(None, str(config), environ={}, cwd="/elsewhere", exists=lambda path: True)
    assert chosen == str(tmp_path / "state" / "control.sock")


def test_an_invalid_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "odxtarget.json"
    config.write_text("{not json")
    with pytest.raises(AdminError) as caught:
        locate_control_socket(None, str(config), environ={}, cwd=str(tmp_path))
    assert str(config) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_search_order(tmp_path: Path) -> None:
    assert searched_sockets(str(tmp_path)) == [
        str(tmp_path / "run" / "control.sock"),
        str(tmp_path / "control.sock"),
        "/run/odxtarget/control.sock",
        "/var/lib/odxtarget/control.sock",
    ]


@pytest.mark.parametrize("present", [0, 1, 2, 3])
def test_the_first_existing_searched_socket_is_used(tmp_path: Path, present: int) -> None:
    places = searched_sockets(str(tmp_path))
    existing = set(places[present:])
    chosen = locate_control_socket(None, None, environ={}, cwd=str(tmp_path), exists=existing.__contains__)
    assert chosen == places[present]


def test_only_a_socket_counts_not_a_plain_file(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "control.sock").write_text("a plain file is not a socket")
    path = tmp_path / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        assert locate_control_socket(None, None, environ={}, cwd=str(tmp_path)) == str(path)
    finally:
        listener.close()


def test_nothing_found_names_every_place_searched(tmp_path: Path) -> None:
    with pytest.raises(SocketNotFound) as caught:
        locate_control_socket(None, None, environ={}, cwd=str(tmp_path), exists=lambda path: False)
    message = str(caught.value)
    assert message.startswith("odxtarget is not running")
    for place in searched_sockets(str(tmp_path)):
        assert place in message
    assert "--socket" in message and SOCKET_ENVIRONMENT in message
