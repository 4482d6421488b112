"""Serial arithmetic, the CmdSN window and the session registry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from odxtarget.config import TargetConfig
from odxtarget.transport.iscsi.ordering import CommandWindow, serial_le, serial_lt
from odxtarget.transport.iscsi.session import SessionRegistry, make_nexus
from tests.unit.iscsi.scsi_double import ScsiTargetDouble

IQN = "iqn.2026-11.org.odxtarget:s"


@given(st.integers(0, 2**32 - 1), st.integers(1, 2**31 - 1))
def test_serial_lt_across_wrap(a, delta):
    b = (a + delta) % 2**32
    assert serial_lt(a, b) and not serial_lt(b, a) and serial_le(a, a)


@given(st.integers(0, 2**32 - 1), st.integers(0, 300))
def test_window_classification(exp, offset):
    window = CommandWindow(exp, depth=128)
    where = window.classify((exp + offset) % 2**32)
    assert where == (CommandWindow.IN_ORDER if offset == 0 else CommandWindow.AHEAD if offset < 128
                     else CommandWindow.OUTSIDE)
    assert window.classify((exp - 1) % 2**32) == CommandWindow.OUTSIDE
    assert window.max_cmd_sn == (exp + 127) % 2**32


def registry() -> SessionRegistry:
    return SessionRegistry([(TargetConfig(iqn=IQN, demo_mode=True, tpgt=3), ScsiTargetDouble())])


def create(reg, isid=b"\x80\0\0\0\0\1"):
    return reg.create(session_type="Normal", initiator_name="iqn.i", initiator_alias=None, isid=isid,
                      target_name=IQN, parameters=None, exp_cmd_sn=1)


def test_tsih_allocation_skips_live_ones_and_never_returns_zero():
    reg = registry()
    reg._next_tsih = 0xFFFF
    a = create(reg)
    b = create(reg, b"\x80\0\0\0\0\2")
    assert (a.tsih, b.tsih) == (0xFFFF, 1)
    reg._next_tsih = 0xFFFF
    assert reg.allocate_tsih() == 2


def test_identity_lookup_and_close_tells_the_core():
    reg = registry()
    session = create(reg)
    assert session.nexus == make_nexus("iqn.i", session.isid, IQN, 3)
    assert session.nexus.target_port.endswith(",t,0x0003")
    assert reg.by_identity("iqn.i", session.isid, IQN) is session
    reg.close(session, logged_out=True, reason="test")
    reg.close(session, logged_out=False, reason="again")       # idempotent
    assert session.scsi_target.logged_out == [session.nexus] and session.scsi_target.lost == []
    assert reg.by_tsih(session.tsih) is None


def test_bound_ports_replace_port_zero():
    reg = SessionRegistry([(TargetConfig(iqn=IQN, portals=[__import__("odxtarget.config", fromlist=["x"]).PortalConfig("127.0.0.1", 0)]),
                            ScsiTargetDouble())])
    reg.use_bound_ports({("127.0.0.1", 0): 4321})
    assert reg.lookup(IQN).portals[0].port == 4321
