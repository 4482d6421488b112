"""The LIO front end gives each ACL its mapped LUNs (LUN masking, docs/configuration.md): the
configured map with write protection, or every LUN under its own number. rtslib is replaced by
a recorder of the objects ``LioConfigurator`` creates (the VM suite runs the real one)."""

from __future__ import annotations

from types import SimpleNamespace

from odxtarget.config import AclConfig, DaemonConfig, LunMapping, MappedLunConfig, TargetConfig
from odxtarget.transport.tcmu.lio_config import LioConfigurator


class FakeRtslib:
    def __init__(self) -> None:
        self.mapped: dict[str, dict[int, tuple[int, bool]]] = {}
        rtslib = self

        class TPG:
            def __init__(self, target, tag):
                self.network_portals, self.luns, self.enable = [], [], False

            def set_attribute(self, name, value):
                pass

        class LUN:
            def __init__(self, tpg, lun, so):
                self.lun, self.storage_object = lun, so

        class NodeACL:
            def __init__(self, tpg, initiator):
                self.initiator, self.mapped_luns = initiator, []
                rtslib.mapped[initiator] = {}

        class MappedLUN:
            def __init__(self, acl, mapped_lun, lun, write_protect=False):
                rtslib.mapped[acl.initiator][mapped_lun] = (lun.lun, write_protect)

        self.Target = lambda fabric, iqn: SimpleNamespace(iqn=iqn)
        self.TPG, self.LUN, self.NodeACL, self.MappedLUN = TPG, LUN, NodeACL, MappedLUN
        self.NetworkPortal = lambda tpg, ip, port: None


def test_each_acl_gets_its_mapped_luns():
    target = TargetConfig(
        iqn="iqn.2026-11.org.example:lio", luns=[LunMapping(0, "a"), LunMapping(1, "b")],
        acls=[AclConfig("iqn.2026-11.org.example:masked", mapped_luns=[MappedLunConfig(0, 1, True)]),
              AclConfig("iqn.2026-11.org.example:all")])
    rtslib = FakeRtslib()
    LioConfigurator(DaemonConfig(frontend="lio", targets=[target]))._target(
        rtslib, None, target, {"a": object(), "b": object()})
    assert rtslib.mapped == {"iqn.2026-11.org.example:masked": {0: (1, True)},
                             "iqn.2026-11.org.example:all": {0: (0, False), 1: (1, False)}}
