"""odxtarget copy's initiator name (open-iscsi's file) and CHAP credentials (files and the
environment, never only the URL): odxtarget.initiator.identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from odxtarget.initiator.identity import (CHAP_SECRET_ENVIRONMENT, CHAP_TARGET_SECRET_ENVIRONMENT,
                                          INITIATOR_NAME_FILE_ENVIRONMENT, ChapCredentials, chap_credentials,
                                          choose_initiator_name, initiator_name_from_file, read_secret_file,
                                          with_credentials)
from odxtarget.initiator.odx_copy import COPY_INITIATOR_NAME, CopyError, parse_iscsi_url
from odxtarget.initiator.sg_io import DeviceUrl

HOST_NAME = "iqn.1993-08.org.debian:01:5a3c0f1e2d"


def name_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "initiatorname.iscsi"
    path.write_text(text)
    return path


def test_the_initiator_name_line_is_read_past_comments(tmp_path):
    path = name_file(tmp_path, "## DO NOT EDIT OR REMOVE THIS FILE!\n#InitiatorName=iqn.x:old\n"
                               f"InitiatorName={HOST_NAME}\n")
    assert initiator_name_from_file(str(path)) == HOST_NAME


def test_no_file_or_no_line_gives_none(tmp_path):
    assert initiator_name_from_file(str(tmp_path / "absent")) is None
    assert initiator_name_from_file(str(name_file(tmp_path, "# nothing here\n"))) is None


def test_a_bad_name_in_the_file_is_a_one_line_error(tmp_path):
    path = name_file(tmp_path, "InitiatorName=not a name\n")
    with pytest.raises(CopyError) as caught:
        initiator_name_from_file(str(path))
    assert str(caught.value).startswith(f"{path}: InitiatorName 'not a name' ")


def test_choice_order_flag_then_file_then_default(tmp_path):
    environ = {INITIATOR_NAME_FILE_ENVIRONMENT: str(name_file(tmp_path, f"InitiatorName={HOST_NAME}\n"))}
    assert choose_initiator_name("iqn.2026-11.org.example:given", environ) == "iqn.2026-11.org.example:given"
    assert choose_initiator_name(None, environ) == HOST_NAME
    assert choose_initiator_name(None, {INITIATOR_NAME_FILE_ENVIRONMENT: str(tmp_path / "absent")}) \
        == COPY_INITIATOR_NAME


def test_secret_files_give_their_first_line(tmp_path):
    path = tmp_path / "secret"
    path.write_text("twelve-chars1\r\nsecond line\n")
    assert read_secret_file(str(path)) == "twelve-chars1"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(CopyError, match="is empty"):
        read_secret_file(str(tmp_path / "empty"))
    with pytest.raises(CopyError, match="cannot read the secret file"):
        read_secret_file(str(tmp_path / "absent"))


def test_a_file_wins_over_the_environment(tmp_path):
    path = tmp_path / "secret"
    path.write_text("from-the-file1\n")
    environ = {CHAP_SECRET_ENVIRONMENT: "from-the-env12"}
    assert chap_credentials(user=None, secret_file=str(path), target_user=None, target_secret_file=None,
                            environ=environ).secret == "from-the-file1"
    assert chap_credentials(user=None, secret_file=None, target_user=None, target_secret_file=None,
                            environ=environ).secret == "from-the-env12"


def test_mutual_chap_must_be_given_whole(tmp_path):
    with pytest.raises(CopyError, match="--chap-target-user needs the target's secret"):
        chap_credentials(user="u", secret_file=None, target_user="tgt", target_secret_file=None, environ={})
    path = tmp_path / "target-secret"
    path.write_text("target-secret1\n")
    with pytest.raises(CopyError, match="needs --chap-target-user"):
        chap_credentials(user="u", secret_file=None, target_user=None, target_secret_file=str(path), environ={})
    both = chap_credentials(user="u", secret_file=None, target_user="tgt", target_secret_file=None,
                            environ={CHAP_TARGET_SECRET_ENVIRONMENT: "target-secret1"})
    assert (both.target_user, both.target_secret) == ("tgt", "target-secret1")


def test_credentials_fill_what_the_url_lacks():
    credentials = ChapCredentials("alice", "env-secret12", "target", "target-secret1")
    filled = with_credentials(parse_iscsi_url("iscsi://host/iqn.2026-11.org.example:t/0"), credentials)
    assert (filled.user, filled.password, filled.target_user, filled.target_password) == \
        ("alice", "env-secret12", "target", "target-secret1")
    own = with_credentials(parse_iscsi_url("iscsi://bob%url-secret1@host/iqn.2026-11.org.example:t/0"), credentials)
    assert (own.user, own.password) == ("bob", "url-secret1")
    user_only = with_credentials(parse_iscsi_url("iscsi://bob@host/iqn.2026-11.org.example:t/0"), credentials)
    assert (user_only.user, user_only.password) == ("bob", "env-secret12")


def test_a_user_without_a_secret_is_refused_before_logging_in():
    with pytest.raises(CopyError, match="CHAP user bob has no secret: set \\$ODXTARGET_CHAP_SECRET"):
        with_credentials(parse_iscsi_url("iscsi://bob@host/iqn.2026-11.org.example:t/0"), ChapCredentials())


def test_no_user_means_no_chap_and_devices_are_left_alone():
    url = parse_iscsi_url("iscsi://host/iqn.2026-11.org.example:t/0")
    assert with_credentials(url, ChapCredentials(secret="unused-secret")) == url
    device = DeviceUrl("/dev/sg3", "2:0:0:0")
    assert with_credentials(device, ChapCredentials("alice", "secret-secret")) == device
