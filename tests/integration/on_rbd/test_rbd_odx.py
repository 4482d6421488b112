"""ODX on LUNs stored in RBD images: POPULATE TOKEN and WRITE USING TOKEN within an RBD LUN,
and between an RBD LUN and a file LUN of the same target. The copy moves data by reading and
writing through the backends (an RBD image has no file to clone)."""

from __future__ import annotations

from tests.integration.odx.odx_support import GOOD, MIB, OdxSession, check
from tests.support.daemon import DaemonSpec, LunSpec

LUN_BYTES = 32 * MIB
BLOCKS = 2 * MIB // 512


def test_copies_within_an_rbd_lun_and_to_and_from_a_file_lun(rbd_image, daemon_factory):
    daemon = daemon_factory(DaemonSpec(luns=[LunSpec(lun=0, size=LUN_BYTES, rbd=rbd_image(LUN_BYTES)),
                                             LunSpec(lun=1, size=LUN_BYTES)]))
    with OdxSession(daemon) as session:
        source = session.fill(0, 2048, 2 * MIB, seed=7)
        token = session.token(0, [(2048, BLOCKS)])
        check(session.write_using(0, token, [(40000, BLOCKS)])[1], GOOD, "WUT within the RBD LUN")
        assert session.read(0, 40000, 2 * MIB) == source
        check(session.write_using(1, token, [(100, BLOCKS)])[1], GOOD, "WUT RBD -> file")
        assert session.read(1, 100, 2 * MIB) == source
        other = session.fill(1, 9000, 2 * MIB, seed=8)
        file_token = session.token(1, [(9000, BLOCKS)])
        check(session.write_using(0, file_token, [(20000, BLOCKS)])[1], GOOD, "WUT file -> RBD")
        assert session.read(0, 20000, 2 * MIB) == other
