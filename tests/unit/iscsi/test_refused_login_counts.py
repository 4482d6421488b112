"""Refused logins are counted by their Login Response status (RFC 7143 11.13.5), for the
metrics endpoint's odxtarget_iscsi_login_failures_total (docs/metrics.md)."""

from __future__ import annotations

import pytest

from odxtarget.config import TargetConfig
from odxtarget.transport.iscsi.connection import IscsiConnection
from odxtarget.transport.iscsi.limits import IscsiLimits
from odxtarget.transport.iscsi.login import LoginStatus
from odxtarget.transport.iscsi.session import SessionRegistry
from tests.unit.iscsi.harness import IQN, Initiator
from tests.unit.iscsi.scsi_double import ScsiTargetDouble


def real_login(registry: SessionRegistry) -> Initiator:
    """An initiator whose connection runs the real login state machine."""
    stub = Initiator(registry)
    stub.connection = IscsiConnection(registry, peer="127.0.0.1:40000", peer_address="127.0.0.1")
    return stub


def registry(**limits) -> SessionRegistry:
    return SessionRegistry([(TargetConfig(iqn=IQN, demo_mode=True), ScsiTargetDouble())],
                           limits=IscsiLimits(**limits))


def test_a_login_the_state_machine_refuses_is_counted_by_its_status():
    sessions = registry()
    reply = real_login(sessions).login(target=IQN + "-absent")
    assert (reply.status_class, reply.status_detail) == LoginStatus.NOT_FOUND.value
    assert dict(sessions.admission.refused_logins) == {"not_found": 1}


def test_a_login_the_connection_refuses_is_counted_by_its_status():
    sessions = registry()
    reply = Initiator(sessions).login(tsih=999)
    assert (reply.status_class, reply.status_detail) == LoginStatus.SESSION_DOES_NOT_EXIST.value
    assert dict(sessions.admission.refused_logins) == {"session_does_not_exist": 1}


def test_a_login_beyond_the_session_limit_is_counted_as_out_of_resources_and_not_throttled():
    sessions = registry(max_sessions=1, max_sessions_per_address=1, max_failed_logins_per_address=1)
    assert real_login(sessions).login().status_class == 0
    reply = real_login(sessions).login()
    assert (reply.status_class, reply.status_detail) == LoginStatus.OUT_OF_RESOURCES.value
    assert dict(sessions.admission.refused_logins) == {"out_of_resources": 1}
    assert not sessions.admission.throttled("127.0.0.1", 0.0)      # not the peer's failure


def test_successful_logins_count_nothing():
    sessions = registry()
    assert real_login(sessions).login().status_class == 0
    assert dict(sessions.admission.refused_logins) == {}


@pytest.mark.parametrize("pair, name", [
    ((2, 1), "authentication_failure"), ((2, 2), "authorization_failure"), ((3, 2), "out_of_resources"),
    ((2, 0x7F), "initiator_error"), ((3, 0x7F), "target_error"), ((0, 0), "initiator_error"),
])
def test_status_names(pair, name):
    assert LoginStatus.name_of(*pair) == name
