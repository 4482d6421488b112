"""The LIO TPG attributes odxtarget sets from a target's configuration (lio_config._target):
demo_mode_write_protect is LIO's own attribute, so in LIO mode the kernel enforces it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from odxtarget.config import LunMapping, TargetConfig
from odxtarget.transport.tcmu.lio_config import LioConfigurator


class FakeTpg:
    def __init__(self, target, tpgt) -> None:
        self.attributes: dict[str, str] = {}
        self.network_portals: list = []
        self.luns: list = []
        self.enable = False

    def set_attribute(self, name: str, value: str) -> None:
        self.attributes[name] = value


def fake_rtslib(made: list[FakeTpg]) -> SimpleNamespace:
    def tpg(target, tpgt):
        made.append(FakeTpg(target, tpgt))
        return made[-1]

    return SimpleNamespace(Target=lambda fabric, iqn: iqn, TPG=tpg, NetworkPortal=lambda *args: None,
                           LUN=lambda tpg, lun, so: SimpleNamespace(lun=lun, storage_object=so),
                           NodeACL=lambda tpg, name: SimpleNamespace(mapped_luns=[]),
                           MappedLUN=lambda *args: None)


@pytest.mark.parametrize("write_protect", [False, True])
def test_demo_mode_write_protect_reaches_the_tpg(write_protect):
    made: list[FakeTpg] = []
    config = TargetConfig(iqn="iqn.2026-11.org.example:lio", demo_mode=True,
                          demo_mode_write_protect=write_protect, luns=[LunMapping(0, "disk0")])
    configurator = LioConfigurator.__new__(LioConfigurator)
    configurator._target(fake_rtslib(made), "iscsi", config, {"disk0": object()})
    [tpg] = made
    assert tpg.attributes["generate_node_acls"] == "1"
    assert tpg.attributes["demo_mode_write_protect"] == ("1" if write_protect else "0")
    assert tpg.enable is True
