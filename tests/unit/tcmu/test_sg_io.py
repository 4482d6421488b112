"""The SG_IO transport of ``odxtarget copy`` (odxtarget/initiator/sg_io.py) without a SCSI device:
the kernel's side of the ioctl is played by a stand-in that fills ``sg_io_hdr`` the way
drivers/scsi/sg.c does. The real ioctl runs in the guest suite (tests/vm/test_lio_odx.py)."""

from __future__ import annotations

import ctypes
import struct

import pytest

from odxtarget.initiator import libiscsi, odx_copy, sg_io
from odxtarget.scsi.sense import SenseData


class FakeKernel:
    """Answers each SG_IO with the next scripted (status, data, sense, host, driver, resid)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.seen: list[dict] = []

    def ioctl(self, fd, request, header):
        assert request == sg_io.SG_IO and header.interface_id == ord("S")
        cdb = ctypes.string_at(header.cmdp, header.cmd_len)
        sent = ctypes.string_at(header.dxferp, header.dxfer_len) if (
            header.dxfer_direction == sg_io.SG_DXFER_TO_DEV) else b""
        self.seen.append({"cdb": cdb, "direction": header.dxfer_direction, "length": header.dxfer_len,
                          "data_out": sent})
        status, data, sense, host, driver, resid = self.answers.pop(0)
        if data:
            ctypes.memmove(header.dxferp, data, len(data))
        if sense:
            ctypes.memmove(header.sbp, sense, len(sense))
        header.status, header.sb_len_wr = status, len(sense)
        header.host_status, header.driver_status, header.resid = host, driver, resid
        return 0


@pytest.fixture
def session(monkeypatch, tmp_path):
    def open_session(*answers):
        kernel = FakeKernel(*answers)
        monkeypatch.setattr(sg_io.fcntl, "ioctl", kernel.ioctl)
        node = tmp_path / "sg9"
        node.write_bytes(b"")
        return sg_io.SgIoSession(str(node)), kernel
    return open_session


def fixed_sense(key: int, asc: int, ascq: int, information: int | None = None) -> bytes:
    sense = bytearray(18)
    sense[0] = 0x70 | (0x80 if information is not None else 0)
    sense[2], sense[7], sense[12], sense[13] = key, 10, asc, ascq
    if information is not None:
        struct.pack_into(">I", sense, 3, information)
    return bytes(sense)


def test_header_layout_is_the_kernels():
    assert ctypes.sizeof(sg_io._SgIoHeader) == 88          # sizeof(sg_io_hdr_t) on x86_64
    assert sg_io._SgIoHeader.dxferp.offset == 16 and sg_io._SgIoHeader.status.offset == 64


def test_data_in_is_cut_to_what_the_device_returned(session):
    sg, kernel = session((0, b"\x00" * 28 + b"\x00\x00\x02\x00" + b"\x00" * 4, b"", 0, 0, 0))
    capacity = bytearray(32)
    struct.pack_into(">QI", capacity, 0, 65535, 512)
    kernel.answers = [(0, bytes(capacity), b"", 0, 0, 0)]
    assert sg.read_capacity(0) == (65536, 512)
    assert kernel.seen[0]["cdb"][:2] == b"\x9e\x10" and kernel.seen[0]["direction"] == sg_io.SG_DXFER_FROM_DEV
    kernel.answers = [(0, b"\x00\x00\x8f\x00", b"", 0, 0, 1020)]
    result = sg.inquiry(0, 0x8F, 1024)
    assert result.good and result.data == b"\x00\x00\x8f\x00"
    assert result.residual == 1020 and result.residual_status == libiscsi.ResidualStatus.UNDERFLOW


def test_check_condition_carries_sense_and_information(session):
    sense = fixed_sense(0x0A, 0x0D, 0x04, information=77)
    sg, kernel = session((libiscsi.STATUS_CHECK_CONDITION, b"", sense, 0, sg_io.DRIVER_SENSE, 0))
    result = sg.scsi_command(0, bytes(16), data_out=b"parameters")
    assert kernel.seen[0]["data_out"] == b"parameters" and kernel.seen[0]["direction"] == sg_io.SG_DXFER_TO_DEV
    assert result.status == libiscsi.STATUS_CHECK_CONDITION and result.acknowledged
    assert (result.sense_key, result.asc, result.ascq) == (0x0A, 0x0D, 0x04)
    assert SenseData.parse(result.sense_raw).information == 77


def test_descriptor_sense_is_decoded(session):
    sense = bytes([0x72, 0x05, 0x21, 0x00, 0, 0, 0, 0])
    sg, _ = session((libiscsi.STATUS_CHECK_CONDITION, b"", sense, 0, sg_io.DRIVER_SENSE, 0))
    result = sg.test_unit_ready(0)
    assert (result.sense_key, result.asc, result.ascq) == (5, 0x21, 0)


def test_a_transport_failure_is_not_acknowledged(session):
    sg, _ = session((0, b"", b"", 0x01, 0, 0))            # DID_NO_CONNECT: the command never ran
    result = sg.test_unit_ready(0)
    assert result.status == libiscsi.STATUS_ERROR and not result.acknowledged


def test_device_urls_and_dispatch(tmp_path):
    url = odx_copy.parse_copy_url("/dev/null?lba=8&blocks=16")
    assert isinstance(url, sg_io.DeviceUrl) and (url.path, url.lba, url.blocks, url.lun) == ("/dev/null", 8, 16, 0)
    assert isinstance(odx_copy.parse_copy_url("iscsi://127.0.0.1/iqn.x:y/0"), odx_copy.IscsiUrl)
    with pytest.raises(odx_copy.UrlError, match="not a device node"):
        odx_copy.parse_copy_url(str(tmp_path))
    with pytest.raises(odx_copy.UrlError, match="lba=N&blocks=M"):
        odx_copy.parse_copy_url("/dev/null?lba=-1")
    with pytest.raises(odx_copy.UrlError, match="No such file"):
        odx_copy.parse_copy_url("/dev/odxtarget-no-such-node")


def test_two_nodes_of_one_lu_share_an_identity(monkeypatch):
    """/dev/sdX and /dev/sgN of one LU resolve to the same sysfs H:C:T:L, so the copy client
    sees a same-LUN copy (and checks the ranges for overlap)."""
    real_realpath = sg_io.os.path.realpath

    def realpath(path, strict=False):
        if path.startswith("/sys/dev/"):
            return "/sys/devices/platform/host3/session1/target3:0:0/3:0:0:1"
        return real_realpath(path)

    monkeypatch.setattr(sg_io.os.path, "realpath", realpath)
    assert sg_io.device_identity("/dev/null") == "3:0:0:1"
    assert sg_io.parse_device_url("/dev/null").target_key == sg_io.parse_device_url("/dev/zero").target_key
