"""Loop devices over sparse files, for the tests of block-device storage objects (docs/block.md).

The ``loop_devices`` fixture (tests/conftest.py): ``loop_devices(size)`` attaches a new loop
device to a new sparse file of ``size`` bytes and returns it; every device it made is
detached when the test ends. Where loop devices cannot be made (not root, no
/dev/loop-control, no losetup) the test skips, but under CI=true it fails: block storage
objects must be tested in CI.

``losetup --find`` needs the /dev/loopN node of the free device the kernel hands out; in a
container without udev that node may be missing, so it is made with mknod (block major 7).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

LOOP_CONTROL = "/dev/loop-control"
#: ``LOOP_CTL_GET_FREE`` from linux/loop.h: the number of a free loop device (made if needed).
LOOP_CTL_GET_FREE = 0x4C82
LOOP_MAJOR = 7


@dataclass(frozen=True, slots=True)
class LoopDevice:
    """An attached loop device and the sparse file behind it."""

    path: str
    backing: Path
    size: int

    def backing_blocks(self) -> int:
        """512-byte blocks the backing file has allocated (after the device's writes reach it)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return os.stat(self.backing).st_blocks


def loop_problem() -> str | None:
    """Why loop devices cannot be made here, or None."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("losetup") is None:
        return "losetup is not installed (Debian package mount)"
    if not os.path.exists(LOOP_CONTROL):
        return f"{LOOP_CONTROL} is missing"
    return None


def _free_device_node() -> str:
    """A free loop device's node, made with mknod when the kernel's new device has none."""
    fd = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        number = fcntl.ioctl(fd, LOOP_CTL_GET_FREE)
    finally:
        os.close(fd)
    node = f"/dev/loop{number}"
    if not os.path.exists(node):
        os.mknod(node, 0o660 | 0o060000, os.makedev(LOOP_MAJOR, number))
    return node


def attach(backing: Path, size: int, sector_size: int = 512) -> LoopDevice:
    """A loop device over a new sparse file ``backing`` of ``size`` bytes.

    Raises:
        RuntimeError: losetup failed.
    """
    with backing.open("wb") as handle:
        handle.truncate(size)
    command = ["losetup", "--show", "--sector-size", str(sector_size)]
    result = subprocess.run([*command, "--find", str(backing)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        result = subprocess.run([*command, _free_device_node(), str(backing)],
                                capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            result.stdout = result.args[4] + "\n"
    if result.returncode != 0:
        raise RuntimeError(f"losetup failed: {result.stderr.strip()}")
    return LoopDevice(result.stdout.strip(), backing, size)


def detach(device: LoopDevice) -> None:
    subprocess.run(["losetup", "--detach", device.path], capture_output=True, timeout=60)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but loop devices are unusable: {reason}")
    pytest.skip(f"loop devices are unusable: {reason}")


@contextmanager
def loop_device_maker(directory: Path) -> Iterator[Callable[..., LoopDevice]]:
    """``make(size, sector_size=512)``: a new loop device over a sparse file in ``directory``;
    every one made is detached when the context ends (the ``loop_devices`` fixture)."""
    problem = loop_problem()
    if problem is not None:
        _unavailable(problem)
    made: list[LoopDevice] = []

    def make(size: int, sector_size: int = 512) -> LoopDevice:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            device = attach(directory / f"loop{len(made)}.img", size, sector_size)
        except (RuntimeError, OSError) as error:
            _unavailable(str(error))
        made.append(device)
        return device

    try:
        yield make
    finally:
        for device in made:
            detach(device)
