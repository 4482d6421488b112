"""Several gateway daemons serving one target from the same RBD images (docs/cluster.md):
the same IQN and storage object names on every gateway, gateway N with TPGT N and the list of
every gateway's group in ``port_groups``, as ``make run-cluster`` configures them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.daemon import STARTUP_TIMEOUT_SECONDS, DaemonProcess, DaemonSpec, LunSpec

CLUSTER_IQN = "iqn.2026-11.org.odxtarget:cluster"


def gateway(number: int, count: int, luns: list[LunSpec], directory: Path) -> DaemonProcess:
    """Gateway ``number`` (1-based) of ``count``, not started yet."""
    spec = DaemonSpec(luns=luns, iqn=CLUSTER_IQN, tpgt=number, port_groups=list(range(1, count + 1)))
    return DaemonProcess(spec, directory / f"gateway{number}")


@contextmanager
def gateways(rbd: dict[str, Any], size: int, directory: Path, count: int = 2,
             start_timeout: float = STARTUP_TIMEOUT_SECONDS) -> Iterator[list[DaemonProcess]]:
    """``count`` started gateways serving LUN 0 from the image ``rbd`` describes; stopped at the
    end (logs stay under ``directory``)."""
    started = [gateway(number, count, [LunSpec(size=size, rbd=rbd, name="shared0")], directory)
               for number in range(1, count + 1)]
    try:
        for process in started:
            process.start(start_timeout)
        yield started
    finally:
        for process in started:
            process.stop()
