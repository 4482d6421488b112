"""odxtarget behind the kernel's LIO (TCMU user:odx backstore), seen by open-iscsi."""

from __future__ import annotations

import glob
import os
import subprocess
import threading
import time
from pathlib import Path

from tests.vm.guest_support import (STORAGE_OBJECT, TARGET_IQN, aligned as _aligned, run,
                                    session_disks)

MIB = 1 << 20


def configfs_device_dir() -> Path:
    (path,) = glob.glob(f"/sys/kernel/config/target/core/user_*/{STORAGE_OBJECT}")
    return Path(path)


def test_tcmu_device_is_ours_and_configured_for_coexistence(lio_daemon):
    names = [Path(p).read_text().strip() for p in glob.glob("/sys/class/uio/uio*/name")]
    assert any(n.startswith("tcm-user/") and n.endswith(f"/{STORAGE_OBJECT}/odx/{STORAGE_OBJECT}")
               for n in names), names
    device = configfs_device_dir()
    assert (device / "attrib" / "nl_reply_supported").read_text().strip() == "-1"
    assert (device / "attrib" / "hw_max_sectors").read_text().strip() == str(16 * MIB // 512)
    assert (device / "attrib" / "tmr_notification").read_text().strip() == "1"


def test_inquiry_answered_by_odxtarget(iscsi_disk):
    output = run("sg_inq", iscsi_disk.block).stdout
    assert "ODXTGT" in output and "odxtarget" in output, output


def test_read_capacity_matches_the_lun(iscsi_disk):
    output = run("sg_readcap", "-l", iscsi_disk.block).stdout
    assert "Logical block length=512 bytes" in output, output
    assert f"Device size: {64 * MIB} bytes" in output, output


def test_8mib_write_and_read_back_through_the_block_device(iscsi_disk):
    data = os.urandom(8 * MIB)
    offset = 4 * MIB
    fd = os.open(iscsi_disk.block, os.O_RDWR | os.O_DIRECT)
    try:
        buffer = _aligned(data)
        assert os.pwrite(fd, buffer, offset) == len(data)
        os.fsync(fd)
        readback = _aligned(bytes(len(data)))
        assert os.preadv(fd, [readback], offset) == len(data)
    finally:
        os.close(fd)
    assert bytes(readback) == data
    with open(iscsi_disk.image, "rb") as image:      # and it is in odxtarget's backing file
        image.seek(offset)
        assert image.read(len(data)) == data


def test_sigkill_during_io_then_restart_resumes_with_data_intact(lio_daemon, iscsi_disk):
    """A writer keeps rewriting the same 16 MiB while the daemon is SIGKILLed and restarted:
    it must see no error, make progress after the restart, and leave the data intact."""
    data = os.urandom(16 * MIB)
    offset = 32 * MIB
    chunk = 256 * 1024
    errors: list[BaseException] = []
    chunks_written = [0]
    stop = threading.Event()

    def writer():
        try:
            fd = os.open(iscsi_disk.block, os.O_RDWR | os.O_DIRECT)
            try:
                while not stop.is_set():
                    for position in range(0, len(data), chunk):
                        os.pwrite(fd, _aligned(data[position:position + chunk]), offset + position)
                        chunks_written[0] += 1
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    while chunks_written[0] < 8 and thread.is_alive():
        time.sleep(0.05)
    assert thread.is_alive() and not errors, errors
    lio_daemon.kill()                          # mid-I/O: the writer never stops
    written_at_kill = chunks_written[0]
    time.sleep(2.0)
    lio_daemon.start()
    deadline = time.monotonic() + 120
    while chunks_written[0] < written_at_kill + 2 * len(data) // chunk and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    thread.join(timeout=240)
    assert not thread.is_alive(), "writer still blocked after restart"
    assert not errors, errors
    assert chunks_written[0] >= written_at_kill + 2 * len(data) // chunk, "I/O did not resume"
    fd = os.open(iscsi_disk.block, os.O_RDONLY | os.O_DIRECT)
    try:
        readback = _aligned(bytes(len(data)))
        assert os.preadv(fd, [readback], offset) == len(data)
    finally:
        os.close(fd)
    assert bytes(readback) == data
    assert 0 in session_disks(TARGET_IQN)
    # A hung task stays in uninterruptible sleep; udev probing the returned disk passes through it.
    deadline = time.monotonic() + 30
    while True:
        d_state = subprocess.run(["sh", "-c", "ps -eo stat,comm | awk '$1 ~ /^D/'"],
                                 capture_output=True, text=True).stdout
        if not d_state.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert d_state.strip() == "", f"tasks in uninterruptible sleep for 30 s: {d_state}"
