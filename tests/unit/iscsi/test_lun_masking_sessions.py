"""Sessions get the LUN map of their initiator's ACL (``lun_masking``), and task management
finds a logical unit's tasks whatever number each session reaches it by."""

from __future__ import annotations

from odxtarget.config import AclConfig, LunMapping, MappedLunConfig, TargetConfig
from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
from odxtarget.scsi.target import ScsiTarget
from odxtarget.scsi.types import TaskManagementFunction as Tmf
from odxtarget.storage.memory import MemoryBackend
from odxtarget.transport.iscsi import pdu as P
from odxtarget.transport.iscsi.session import SessionRegistry
from tests.unit.iscsi.harness import IQN, Initiator
from tests.unit.iscsi.test_tmf import tmf, waiting_write

MASKED = "iqn.2026-11.org.example:masked"
OPEN = "iqn.2026-11.org.example:demo"


def world():
    units = {name: LogicalUnit(LogicalUnitConfig(name=name, backend=MemoryBackend(1 << 20), block_size=512))
             for name in ("a", "b")}
    scsi_target = ScsiTarget(IQN, {0: units["a"], 1: units["b"]})
    config = TargetConfig(IQN, luns=[LunMapping(0, "a"), LunMapping(1, "b")], demo_mode=True,
                          acls=[AclConfig(MASKED, mapped_luns=[MappedLunConfig(0, 1, write_protect=True)])])
    registry = SessionRegistry([(config, scsi_target)])
    stubs = {}
    for name in (MASKED, OPEN):
        stub = Initiator(registry, scsi_target, immediate_data=False, initial_r2t=True)
        assert stub.login(keys={"InitiatorName": name}).status_class == 0
        stubs[name] = stub
    return units, scsi_target, stubs


def test_a_masked_initiators_session_uses_its_own_map():
    units, scsi_target, stubs = world()
    masked = stubs[MASKED].connection.session.scsi_target
    assert masked is not scsi_target and masked.luns == {0: units["b"]}
    assert masked.write_protected_luns == frozenset({0})
    assert stubs[OPEN].connection.session.scsi_target is scsi_target      # demo mode: every LUN


def test_lun_reset_aborts_the_logical_units_tasks_under_every_number():
    _, _, stubs = world()
    masked, demo = stubs[MASKED], stubs[OPEN]
    theirs, _ = waiting_write(demo, lun=1)          # LU b, which the masked initiator calls LUN 0
    keep, _ = waiting_write(demo, lun=0)            # LU a
    response = tmf(masked, Tmf.LOGICAL_UNIT_RESET, lun=P.encode_lun(0))
    assert response.response == P.TmfResponse.FUNCTION_COMPLETE
    assert demo.connection.tasks.find(theirs.initiator_task_tag) is None
    assert demo.connection.tasks.find(keep.initiator_task_tag) is not None
