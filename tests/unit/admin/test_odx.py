"""The /odx operations over a real copy manager attached to the daemon's logical units:
a token made by POPULATE TOKEN is listed, and revoking it makes WRITE USING TOKEN fail with
INVALID TOKEN OPERATION, TOKEN REVOKED (23h/06h)."""

from __future__ import annotations


import pytest

from odxtarget.scsi.execution import complete_inline
from odxtarget.admin.protocol import AdminError
from odxtarget.config import dump_config, load_config
from odxtarget.copy import CopyLimits, CopyManager
from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
from odxtarget.scsi.types import ItNexus, ScsiCommand, Status
from tests.support.copy_cdbs import pt_cdb, wut_cdb

from .conftest import IQN, MIB

NEXUS = ItNexus("iqn.2026-11.org.example:host1,i,0x400001370000", f"{IQN},t,0x0001")
TEST_UNIT_READY = bytes(6)
ILLEGAL_REQUEST = 0x5


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def odx(admin):
    for name in ("disk0", "disk1"):
        admin.call("extent.create", name=name, size="4M")
    admin.call("target.create", iqn=IQN)
    clock = Clock()
    manager = CopyManager(admin.daemon.config.state_dir, CopyLimits(), clock=clock)
    admin.daemon.copy_manager = manager
    for lu in admin.daemon.logical_units.values():
        manager.attach(lu)
    admin.call("lun.create", iqn=IQN, storage_object="disk0")
    admin.call("lun.create", iqn=IQN, storage_object="disk1")
    target = admin.ops.live.scsi_target(IQN)

    def run(cdb: bytes, data: bytes = b"", lun: int = 0):
        return complete_inline(target.execute(ScsiCommand(cdb=cdb, nexus=NEXUS, lun=lun, data_out=data,
                                          expected_transfer_length=len(data))))

    for lun in (0, 1):
        run(TEST_UNIT_READY, lun=lun)  # consume the power-on unit attention
    yield admin, manager, clock, run
    manager.close()


def populate(run, ranges, list_id=1, lun=0):
    data = build_populate_token_list(ranges)
    result = run(pt_cdb(list_id, len(data)), data, lun)
    assert result.status == Status.GOOD, result.sense.hex()


def write_using(run, token, ranges, list_id, lun=1):
    data = build_write_using_token_list(token, ranges)
    return run(wut_cdb(list_id, len(data)), data, lun)


def test_tokens_lists_a_token_made_by_populate_token(odx):
    admin, manager, clock, run = odx
    populate(run, [(0, 8), (100, 16)])
    clock.now += 5
    [token] = admin.call("odx.tokens")
    assert token["creator"] == "disk0"
    assert token["ranges"] == [[0, 8], [100, 16]]
    assert token["bytes"] == 24 * 512
    assert token["idle"] == 5
    assert token["expires_in"] == CopyLimits().default_inactivity_timeout - 5
    assert token["id"] == f"{manager.tokens.active()[0].token_id:016x}"


def test_revoke_makes_write_using_token_fail_with_token_revoked(odx):
    admin, manager, _, run = odx
    populate(run, [(0, 8)])
    token = manager.tokens.active()[0].token
    assert write_using(run, token, [(0, 8)], list_id=2).status == Status.GOOD  # usable before
    [listed] = admin.call("odx.tokens")
    assert admin.call("odx.revoke", token=listed["id"]) == {"revoked": listed["id"]}
    result = write_using(run, token, [(0, 8)], list_id=3)
    assert result.status == Status.CHECK_CONDITION
    assert (result.sense[2] & 0x0F, result.sense[12], result.sense[13]) == (ILLEGAL_REQUEST, 0x23, 0x06)
    assert admin.call("odx.tokens") == []
    with pytest.raises(AdminError, match="no live token"):
        admin.call("odx.revoke", token=listed["id"])
    with pytest.raises(AdminError, match="is not a token id"):
        admin.call("odx.revoke", token="xyz")


def test_counters_report_offloaded_bytes_by_method(odx):
    admin, manager, _, run = odx
    populate(run, [(0, 8)])
    token = manager.tokens.active()[0].token
    assert write_using(run, token, [(0, 8)], list_id=2).status == Status.GOOD
    counters = admin.call("odx.counters")
    assert sum(counters["bytes_by_method"].values()) == 8 * 512
    assert counters["logical_units"]["disk1"]["commands"]["write_using_token"] == 1


def test_limits_can_be_read_and_changed_and_bad_values_are_refused(odx):
    admin, manager, _, _ = odx
    assert admin.call("odx.limits")["time_budget"] == CopyLimits().write_using_token_budget
    changed = admin.call("odx.set_limits", default_inactivity_timeout="30", optimal_transfer_size="32M",
                         time_budget="2.5")
    assert (changed["default_inactivity_timeout"], changed["optimal_transfer_size"], changed["time_budget"]) == (
        30, 32 * MIB, 2.5)
    assert manager.limits.write_using_token_budget == 2.5
    with pytest.raises(AdminError, match="must not exceed max_token_transfer_bytes"):
        admin.call("odx.set_limits", optimal_transfer_size="1G")
    with pytest.raises(AdminError, match="default_inactivity_timeout <?=? ?max_inactivity_timeout|must not exceed max_inactivity_timeout"):
        admin.call("odx.set_limits", default_inactivity_timeout=10_000)
    assert manager.limits.optimal_transfer_bytes == 32 * MIB


def test_changed_limits_are_saved_and_restore_brings_back_the_saved_ones(odx):
    admin, manager, _, _ = odx
    assert admin.call("status")["unsaved_changes"]          # the fixture's objects
    admin.call("config.save")
    admin.call("odx.set_limits", time_budget="0.5", max_token_transfer_size="128M")
    assert admin.call("status")["unsaved_changes"]
    admin.call("config.save")
    saved = load_config(str(admin.config_path)).odx
    assert (saved.write_using_token_budget, saved.max_token_transfer_bytes) == (0.5, 128 * MIB)
    assert saved.default_inactivity_timeout is None          # untouched limits stay defaults

    admin.call("odx.set_limits", time_budget="2")
    assert manager.limits.write_using_token_budget == 2.0
    admin.call("config.restore", confirm=True)
    assert manager.limits.write_using_token_budget == 0.5
    assert manager.limits.max_token_transfer_bytes == 128 * MIB
    admin.call("config.clear", confirm=True)                 # objects go, limits stay
    assert manager.limits.write_using_token_budget == 0.5


def test_a_refused_limit_change_leaves_config_and_manager_alone(odx):
    admin, manager, _, _ = odx
    before = (dump_config(admin.daemon.config), manager.limits)
    with pytest.raises(AdminError, match="write_using_token_budget"):
        admin.call("odx.set_limits", time_budget=100)       # over the config's 60 s ceiling
    with pytest.raises(AdminError, match="unknown parameter 'max_rod_size'"):
        admin.call("odx.set_limits", max_rod_size=1)
    assert (dump_config(admin.daemon.config), manager.limits) == before


def test_the_tunable_limits_are_copy_limits_fields_saved_under_their_config_keys():
    import dataclasses
    import inspect

    from odxtarget.admin.odx import TUNABLE_LIMITS
    from odxtarget.admin.ops import OPERATIONS
    from odxtarget.config import ODX_SECTION

    assert list(TUNABLE_LIMITS) == ["default_inactivity_timeout", "max_inactivity_timeout",
                                    "max_token_transfer_size", "optimal_transfer_size", "time_budget"]
    defaults = CopyLimits()
    for limit in TUNABLE_LIMITS.values():
        key = ODX_SECTION.key(limit.field)
        assert (limit.type, limit.kind) == (type(getattr(defaults, limit.field)), key.kind)
        assert limit.field in {item.name for item in dataclasses.fields(CopyLimits)}
    parameters = inspect.signature(OPERATIONS["odx.set_limits"].method).parameters
    assert list(parameters) == ["self", *TUNABLE_LIMITS]
    assert all(p.default is None for name, p in parameters.items() if name != "self")


def test_deleting_a_storage_object_revokes_its_tokens(odx):
    admin, manager, _, run = odx
    populate(run, [(0, 8)])
    token = manager.tokens.active()[0].token
    admin.call("lun.delete", iqn=IQN, lun=0)
    ua = run(TEST_UNIT_READY, lun=1)  # the LUN map changed: SPC-4 6.33 unit attention first
    assert (ua.sense[2] & 0xF, ua.sense[12], ua.sense[13]) == (0x6, 0x3F, 0x0E)
    admin.call("extent.delete", name="disk0")
    assert admin.call("odx.tokens") == []
    result = write_using(run, token, [(0, 8)], list_id=2)
    assert (result.sense[12], result.sense[13]) == (0x23, 0x06)


def test_a_new_storage_object_gets_copy_offload(odx):
    admin, manager, _, run = odx
    admin.call("extent.create", name="disk2", size="4M")
    assert admin.daemon.logical_units["disk2"].third_party_copy is True
