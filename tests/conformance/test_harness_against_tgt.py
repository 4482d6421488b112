"""Self-checks of the test harness itself, against Debian's tgtd as a known-good target:
the ctypes binding's struct layout and behaviour, and the iscsi-test-cu parser on live output.
A broken harness would otherwise make odxtarget's own results meaningless."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import iscsi_test_cu as cu
from tests.support import libiscsi
from tests.support.daemon import MIB
from tests.support.tgt import TgtDaemon, TgtLun, tgt_available

HEADER = Path("/usr/include/iscsi/scsi-lowlevel.h")
TGT_IQN = "iqn.2026-11.org.odxtarget:tgt-selfcheck"
BLOCK_SIZE = 512

LAYOUT_PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#define OFFSET(member) printf("%s %zu\n", #member, offsetof(struct scsi_task, member))
int main(void) {
    printf("sizeof %zu\n", sizeof(struct scsi_task));
    OFFSET(status); OFFSET(cdb_size); OFFSET(xfer_dir); OFFSET(expxferlen); OFFSET(cdb);
    OFFSET(residual_status); OFFSET(residual); OFFSET(sense);
    OFFSET(sense.error_type); OFFSET(sense.key); OFFSET(sense.ascq);
    OFFSET(sense.bit_pointer); OFFSET(sense.field_pointer);
    OFFSET(datain); OFFSET(datain.size); OFFSET(datain.data);
    OFFSET(mem); OFFSET(ptr); OFFSET(itt); OFFSET(cmdsn); OFFSET(lun);
    OFFSET(iovector_in); OFFSET(iovector_out);
    return 0;
}
"""


def test_ctypes_layout_matches_expected_numbers():
    assert libiscsi.ctypes_layout() == libiscsi.EXPECTED_LAYOUT


@pytest.mark.skipif(not HEADER.exists() or shutil.which("cc") is None,
                    reason="needs libiscsi-dev headers and a C compiler (optional)")
def test_ctypes_layout_matches_installed_header(tmp_path):
    source = tmp_path / "layout.c"
    source.write_text(LAYOUT_PROGRAM)
    binary = tmp_path / "layout"
    subprocess.run(["cc", "-o", str(binary), str(source)], check=True)
    output = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    from_header = {name: int(value) for name, value in (line.split() for line in output.splitlines())}
    assert from_header == libiscsi.EXPECTED_LAYOUT


needs_tgt = pytest.mark.skipif(
    not tgt_available() or os.geteuid() != 0,
    reason="needs Debian's tgt and root (tgtd's management socket lives in /var/run/tgtd)",
)


@pytest.fixture(scope="module")
def tgt(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tgt")
    images = []
    for name in ("rw.img", "ro.img"):
        image = directory / name
        with image.open("wb") as handle:
            handle.truncate(64 * MIB)
        images.append(image)
    daemon = TgtDaemon(TGT_IQN, [TgtLun(1, images[0]), TgtLun(2, images[1], read_only=True)],
                       directory / "tgtd.log")
    with daemon.start():
        yield daemon


def clear_unit_attentions(session: libiscsi.IscsiSession, lun: int) -> None:
    for _ in range(8):
        if session.test_unit_ready(lun).good:
            return
    raise AssertionError(f"LUN {lun} keeps reporting unit attentions")


@needs_tgt
def test_binding_round_trip_against_tgt(tgt):
    with libiscsi.connect(tgt.host, tgt.port, tgt.iqn, lun=1) as session:
        blocks, block_size = session.read_capacity(1)
        assert (blocks, block_size) == (64 * MIB // BLOCK_SIZE, BLOCK_SIZE)
        inquiry = session.inquiry(1)
        assert inquiry.good and inquiry.data[0] & 0x1F == 0x00          # direct-access block device
        payload = bytes(range(256)) * 8                                  # 4 blocks
        assert session.write(1, 100, payload, BLOCK_SIZE, fua=True).good
        assert session.synchronize_cache(1).good
        read = session.read(1, 100, 4, BLOCK_SIZE)
        assert read.good and read.data == payload


@needs_tgt
def test_binding_reports_sense_and_residuals(tgt):
    with libiscsi.connect(tgt.host, tgt.port, tgt.iqn, lun=1) as session:
        blocks, _ = session.read_capacity(1)
        beyond = session.read(1, blocks, 1, BLOCK_SIZE)
        assert beyond.status == libiscsi.STATUS_CHECK_CONDITION
        assert (beyond.sense_key, beyond.asc, beyond.ascq) == (0x05, 0x21, 0x00)   # LBA OUT OF RANGE
        assert beyond.sense_raw[0] & 0x7F in (0x70, 0x72) and beyond.sense_raw[2] & 0x0F == 0x05
        big = session.inquiry(1, allocation_length=1024)                 # standard data is shorter
        assert big.good and big.residual_status == libiscsi.ResidualStatus.UNDERFLOW
        assert big.residual == 1024 - len(big.data)
        clear_unit_attentions(session, 2)   # login cleared LUN 1's power-on UA only
        protected = session.write(2, 0, bytes(BLOCK_SIZE), BLOCK_SIZE)
        assert protected.status == libiscsi.STATUS_CHECK_CONDITION and protected.sense_key == 0x07


@needs_tgt
def test_login_failure_raises_with_libiscsi_text(tgt):
    with pytest.raises(libiscsi.LoginError, match="Target not found"):
        libiscsi.connect(tgt.host, tgt.port, tgt.iqn + ":no-such-target", lun=1)


@needs_tgt
def test_parser_on_live_iscsi_test_cu_output(tgt, tmp_path):
    result = cu.run([tgt.url(1)], "SCSI.Inquiry", dataloss=False, timeout_seconds=120,
                    log_path=tmp_path / "inquiry.log")
    expected = cu.list_tests("SCSI.Inquiry")
    assert sorted(result.outcomes) == sorted(expected) and len(expected) == 7
    assert result.counts()[cu.NOT_RUN] == 0
    # tgt's LU is fully provisioned: libiscsi skips the block-limits checks and says so.
    assert result.outcomes["SCSI.Inquiry.BlockLimits"].status == cu.SKIPPED
    assert result.outcomes["SCSI.Inquiry.Standard"].status == cu.PASSED


@needs_tgt
def test_binding_chap_and_mutual_chap_against_tgt(tmp_path):
    image = tmp_path / "chap.img"
    with image.open("wb") as handle:
        handle.truncate(8 * MIB)
    initiator_secret, target_secret = ("alice", "alicesecret12"), ("tgt", "targetsecret12")
    with TgtDaemon(TGT_IQN, [TgtLun(1, image)], tmp_path / "tgtd.log",
                   chap=initiator_secret, mutual_chap=target_secret).start() as tgt:
        with libiscsi.connect(tgt.host, tgt.port, tgt.iqn, lun=1, chap=initiator_secret) as session:
            assert session.test_unit_ready(1).acknowledged
        with libiscsi.connect(tgt.host, tgt.port, tgt.iqn, lun=1, chap=initiator_secret,
                              mutual_chap=target_secret) as session:
            assert session.read_capacity(1) == (8 * MIB // BLOCK_SIZE, BLOCK_SIZE)
        with pytest.raises(libiscsi.LoginError, match="login to"):
            libiscsi.connect(tgt.host, tgt.port, tgt.iqn, lun=1, chap=("alice", "wrongsecret12"))
        with pytest.raises(libiscsi.LoginError):
            libiscsi.connect(tgt.host, tgt.port, tgt.iqn, lun=1)   # no credentials at all
        with pytest.raises(libiscsi.LoginError):                    # target proves the wrong secret
            libiscsi.connect(tgt.host, tgt.port, tgt.iqn, lun=1, chap=initiator_secret,
                             mutual_chap=("tgt", "notthesecret12"))
