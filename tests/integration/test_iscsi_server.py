"""IscsiServer on 127.0.0.1:0 driven by the real libiscsi tools and by a raw PDU client."""

from __future__ import annotations

import asyncio
import re
import shutil
import struct

import pytest

from odxtarget.config import PortalConfig, TargetConfig
from odxtarget.storage.memory import MemoryBackend
from odxtarget.transport.iscsi import pdu as P
from odxtarget.transport.iscsi.server import IscsiServer
from odxtarget.transport.iscsi.text import encode_text

IQN = "iqn.2026-11.org.odxtarget:itest"
LUN_SIZE = 64 << 20
pytestmark = pytest.mark.skipif(shutil.which("iscsi-inq") is None, reason="libiscsi-bin is not installed")


def make_scsi_target():
    """The real SCSI core over a MemoryBackend (the test double when the core is not importable)."""
    try:
        from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
        from odxtarget.scsi.target import ScsiTarget
    except ImportError:  # pragma: no cover - only before the core landed
        from tests.unit.iscsi.scsi_double import ScsiTargetDouble
        return ScsiTargetDouble(blocks=LUN_SIZE // 512)
    lu = LogicalUnit(LogicalUnitConfig(name="itest0", backend=MemoryBackend(LUN_SIZE), block_size=512))
    return ScsiTarget(IQN, {0: lu})


class Recorder:
    """Wraps a ScsiTarget and records nexus events."""

    def __init__(self, inner):
        self.inner = inner
        self.lost, self.logged_out = [], []

    def execute(self, command):
        return self.inner.execute(command)

    def task_management(self, function, nexus, lun):
        return self.inner.task_management(function, nexus, lun)

    def reset_announcements(self, function, lun=None):
        return self.inner.reset_announcements(function, lun)

    def data_out_length(self, cdb, lun=0):
        return self.inner.data_out_length(cdb, lun)

    def solicited_data_out(self, cdb, lun=0):
        return self.inner.solicited_data_out(cdb, lun)

    def logical_unit(self, lun):
        return self.inner.logical_unit(lun)

    def set_task_aborter(self, aborter):
        self.inner.set_task_aborter(aborter)

    def nexus_lost(self, nexus):
        self.lost.append(nexus)
        self.inner.nexus_lost(nexus)

    def nexus_logged_out(self, nexus):
        self.logged_out.append(nexus)
        self.inner.nexus_logged_out(nexus)


async def run_tool(*argv: str, timeout: float = 300.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode, out.decode(errors="replace")


def serve(test, *, nop_interval: float = 30.0):
    """Run ``await test(server, port, target)`` against a started server; always shut it down."""
    async def main():
        target = Recorder(make_scsi_target())
        config = TargetConfig(iqn=IQN, portals=[PortalConfig("127.0.0.1", 0)], demo_mode=True)
        server = IscsiServer([(config, target)], nop_interval=nop_interval)
        await server.start()
        try:
            (host, port), = server.addresses
            assert host == "127.0.0.1" and port != 0
            return await test(server, port, target)
        finally:
            await server.shutdown(grace=2.0)
    return asyncio.run(main())


def test_iscsi_inq_and_ls():
    async def test(server, port, target):
        rc, out = await run_tool("iscsi-inq", f"iscsi://127.0.0.1:{port}/{IQN}/0")
        assert rc == 0, out
        assert "DIRECT_ACCESS" in out and "Vendor:ODXTGT" in out
        rc, out = await run_tool("iscsi-ls", "-s", f"iscsi://127.0.0.1:{port}")
        assert rc == 0, out
        assert f"Target:{IQN} Portal:127.0.0.1:{port},1" in out
        assert re.search(r"Lun:0\s+Type:DIRECT_ACCESS", out)
        assert len(target.logged_out) + len(target.lost) >= 1
    serve(test)


@pytest.mark.slow
def test_iscsi_test_cu_iscsi_family_passes():
    if shutil.which("iscsi-test-cu") is None:
        pytest.skip("iscsi-test-cu is not installed")

    async def test(server, port, target):
        rc, out = await run_tool("iscsi-test-cu", "--dataloss", "--test=iSCSI", f"iscsi://127.0.0.1:{port}/{IQN}/0")
        summary = re.search(r"tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out)
        assert summary, out[-3000:]
        total, ran, passed, failed = map(int, summary.groups())
        assert (total, ran, passed, failed) == (15, 15, 15, 0), out[-6000:]
    serve(test)


async def raw_login(port: int, isid: bytes = bytes.fromhex("800000000001"), **keys):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pairs = {"InitiatorName": "iqn.2026-11.org.example:raw", "SessionType": "Normal", "TargetName": IQN,
             "HeaderDigest": "None", "DataDigest": "None", "ImmediateData": "Yes", "InitialR2T": "Yes",
             "MaxRecvDataSegmentLength": "262144", "AuthMethod": "None", **keys}
    # security stage then operational, each with the transit bit (the RFC 7143 6.3 minimal path)
    for csg, nsg, wanted in ((0, 1, ("InitiatorName", "SessionType", "TargetName", "AuthMethod")),
                             (1, 3, ("HeaderDigest", "DataDigest", "ImmediateData", "InitialR2T",
                                     "MaxRecvDataSegmentLength"))):
        request = P.LoginRequest(transit=True, csg=csg, nsg=nsg, isid=isid, initiator_task_tag=1, cmd_sn=1,
                                 data=encode_text([(k, pairs[k]) for k in wanted]))
        writer.write(b"".join(bytes(b) for b in P.encode_pdu(request)))
        response = await read_pdu(reader)
        assert isinstance(response, P.LoginResponse) and response.status_class == 0, response
    assert response.tsih != 0
    return reader, writer, response


async def read_pdu(reader):
    header = await reader.readexactly(P.BHS_SIZE)
    length = struct.unpack_from(">I", header, 4)[0] & 0xFFFFFF
    body = await reader.readexactly(length + (-length & 3)) if length else b""
    return P.RawPdu(header, b"", body[:length]).decode()


def test_sessions_listing_and_graceful_shutdown_logs_sessions_out():
    async def test(server, port, target):
        reader, writer, login = await raw_login(port)
        (info,) = server.sessions()
        assert info["initiator"] == "iqn.2026-11.org.example:raw" and info["tsih"] == login.tsih
        assert info["isid"] == "800000000001" and info["target"] == IQN
        assert info["header_digest"] == "None" and info["peer"].startswith("127.0.0.1:")
        # the first command collects the power-on unit attention; then a READ goes through
        writer.write(b"".join(bytes(b) for b in P.encode_pdu(P.ScsiCommandPdu(initiator_task_tag=6, cmd_sn=1,
                                                                                cdb=bytes(6)))))
        assert isinstance(await read_pdu(reader), P.ScsiResponse)
        cdb = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
        writer.write(b"".join(bytes(b) for b in P.encode_pdu(P.ScsiCommandPdu(
            read=True, initiator_task_tag=7, expected_data_transfer_length=4096, cmd_sn=2, cdb=cdb))))
        pdus = [await read_pdu(reader)]
        while not pdus[-1].has_status:
            pdus.append(await read_pdu(reader))
        assert sum(len(p.data) for p in pdus) == 4096 and pdus[-1].status == 0
        await server.shutdown(grace=1.0)
        assert await reader.read() == b""          # closed by the target
        assert server.sessions() == []
        assert len(target.logged_out) == 1 and target.lost == []
        writer.close()
    serve(test)


def test_a_broken_connection_does_not_disturb_another_session():
    async def test(server, port, target):
        reader, writer, _ = await raw_login(port)
        bad_reader, bad_writer = await asyncio.open_connection("127.0.0.1", port)
        bad_writer.write(b"\x07" * 48)                # not a Login Request
        assert await asyncio.wait_for(bad_reader.read(), 5) == b""
        writer.write(b"".join(bytes(b) for b in P.encode_pdu(P.NopOut(initiator_task_tag=3, cmd_sn=1,
                                                                        data=b"still here"))))
        nop_in = await asyncio.wait_for(read_pdu(reader), 5)
        assert isinstance(nop_in, P.NopIn) and bytes(nop_in.data) == b"still here"
        rc, out = await run_tool("iscsi-inq", f"iscsi://127.0.0.1:{port}/{IQN}/0")
        assert rc == 0, out
        writer.close()
    serve(test)


def test_reinstatement_over_tcp_closes_the_old_connection():
    async def test(server, port, target):
        reader, writer, first = await raw_login(port)
        reader2, writer2, second = await raw_login(port)
        assert second.tsih != first.tsih
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert len(target.lost) == 1
        assert [s["tsih"] for s in server.sessions()] == [second.tsih]
        writer.close()
        writer2.close()
    serve(test)


def test_idle_connection_gets_a_nop_in_ping():
    async def test(server, port, target):
        reader, writer, _ = await raw_login(port)
        ping = await asyncio.wait_for(read_pdu(reader), 5)
        assert isinstance(ping, P.NopIn) and ping.initiator_task_tag == P.RESERVED_TAG
        assert ping.target_transfer_tag != P.RESERVED_TAG
        writer.close()
    serve(test, nop_interval=1.0)


def test_crc32c_digests_end_to_end_over_tcp():
    """libiscsi's tools do not offer CRC32C first, so a raw client negotiates both digests."""
    async def test(server, port, target):
        reader, writer, _ = await raw_login(port, HeaderDigest="CRC32C", DataDigest="CRC32C")
        (info,) = server.sessions()
        assert (info["header_digest"], info["data_digest"]) == ("CRC32C", "CRC32C")
        framer = P.PduFramer(1 << 24, header_digest=True, data_digest=True)

        async def exchange(pdu, until):
            writer.write(b"".join(bytes(b) for b in P.encode_pdu(pdu, True, True)))
            got = []
            while not (got and until(got[-1])):
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                assert chunk, "connection closed"
                got += [raw.decode() for raw in framer.feed(chunk)]
                assert not any(isinstance(p, P.Reject) for p in got), got
            return got

        def done(pdu):
            return isinstance(pdu, P.ScsiResponse) or getattr(pdu, "has_status", False)

        await exchange(P.ScsiCommandPdu(initiator_task_tag=1, cmd_sn=1, cdb=bytes(6)), done)   # eats the UA
        payload = bytes(range(256)) * 16
        write = bytes([0x2A, 0, 0, 0, 0, 16, 0, 0, 8, 0])
        (response,) = await exchange(P.ScsiCommandPdu(write=True, initiator_task_tag=2, cmd_sn=2, cdb=write,
                                                      expected_data_transfer_length=4096, data=payload), done)
        assert response.status == 0
        read = bytes([0x28, 0, 0, 0, 0, 16, 0, 0, 8, 0])
        pdus = await exchange(P.ScsiCommandPdu(read=True, initiator_task_tag=3, cmd_sn=3, cdb=read,
                                               expected_data_transfer_length=4096), done)
        assert b"".join(bytes(p.data) for p in pdus) == payload
        writer.close()
    serve(test)


def test_start_raises_oserror_when_the_portal_is_taken():
    async def main():
        blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = blocker.sockets[0].getsockname()[1]
        try:
            config = TargetConfig(iqn=IQN, portals=[PortalConfig("127.0.0.1", port)], demo_mode=True)
            server = IscsiServer([(config, Recorder(make_scsi_target()))])
            with pytest.raises(OSError):
                await server.start()
            assert server.addresses == []
        finally:
            blocker.close()
            await blocker.wait_closed()
    asyncio.run(main())


def test_an_internal_error_closes_only_that_connection(caplog):
    class Exploding(Recorder):
        def execute(self, command):
            if command.cdb[0] == 0xC0:            # a vendor opcode we use as a trigger
                raise RuntimeError("core bug")
            return super().execute(command)

    async def main():
        target = Exploding(make_scsi_target())
        config = TargetConfig(iqn=IQN, portals=[PortalConfig("127.0.0.1", 0)], demo_mode=True)
        server = IscsiServer([(config, target)])
        await server.start()
        try:
            port = server.addresses[0][1]
            victim_reader, victim_writer, _ = await raw_login(port, isid=bytes.fromhex("800000000001"))
            other_reader, other_writer, _ = await raw_login(port, isid=bytes.fromhex("800000000002"))
            victim_writer.write(b"".join(bytes(b) for b in P.encode_pdu(
                P.ScsiCommandPdu(initiator_task_tag=1, cmd_sn=1, cdb=bytes([0xC0]) + bytes(15)))))
            assert await asyncio.wait_for(victim_reader.read(), 5) == b""
            other_writer.write(b"".join(bytes(b) for b in P.encode_pdu(P.NopOut(initiator_task_tag=9, cmd_sn=1))))
            assert isinstance(await asyncio.wait_for(read_pdu(other_reader), 5), P.NopIn)
            assert len(server.sessions()) == 1 and len(target.lost) == 1
            victim_writer.close()
            other_writer.close()
        finally:
            await server.shutdown(grace=1.0)

    with caplog.at_level("ERROR", "odxtarget.iscsi"):
        asyncio.run(main())
    assert "internal error" in caplog.text and "core bug" in caplog.text
