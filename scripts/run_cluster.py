#!/usr/bin/env python3
"""``make run-cluster``: a one-node Ceph cluster and two odxtarget gateways in front of it.

Both gateways serve ``iqn.2026-11.org.odxtarget:cluster`` with LUNs 0 and 1, each an RBD image
of 1 GiB, on 127.0.0.1:3260 and 127.0.0.1:3261; everything lives under ``run/cluster``.
Ctrl-C stops the gateways, then the cluster. The cluster's OSD keeps its objects in memory
(tests/support/ceph.py), so the images start empty on every run.

What several gateways give, and what they do not, is in docs/rbd.md ("Several gateways").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.ceph import CephCluster  # noqa: E402
from tests.support.daemon import LOOPBACK, port_accepts  # noqa: E402

IQN = "iqn.2026-11.org.odxtarget:cluster"
IMAGES = ("lun0", "lun1")
IMAGE_BYTES = 1 << 30
START_TIMEOUT_SECONDS = 30.0


def gateway_config(number: int, port: int, gateways: int, cluster: CephCluster, directory: Path) -> dict:
    """One gateway: the same target, LUNs and images as the others, its own portal and TPG
    (gateway N has TPGT N + 1); each lists every gateway's group for ALUA."""
    return {
        "schema_version": 1,
        "state_dir": str(directory / "state"),
        "log_level": "info",
        "storage_objects": [
            {"name": image, "size": IMAGE_BYTES,
             "rbd": {"pool": "rbd", "image": image, "conf": str(cluster.conf_path)}}
            for image in IMAGES
        ],
        "targets": [{
            "iqn": IQN, "tpgt": number + 1, "port_groups": list(range(1, gateways + 1)), "demo_mode": True,
            "portals": [{"ip": LOOPBACK, "port": port}],
            "luns": [{"lun": lun, "storage_object": image} for lun, image in enumerate(IMAGES)],
        }],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(REPO_ROOT / "run" / "cluster"), help="where everything lives")
    parser.add_argument("--ports", default="3260,3261", help="the gateways' ports on 127.0.0.1")
    arguments = parser.parse_args()
    ports = [int(port) for port in arguments.ports.split(",")]
    base = Path(arguments.dir).resolve()
    if (base / "ceph").exists():
        shutil.rmtree(base / "ceph")              # memstore: nothing in it survived the last run
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    print(f"run-cluster: starting a one-node Ceph cluster in {base / 'ceph'}", flush=True)
    cluster = CephCluster(base / "ceph")
    gateways: list[subprocess.Popen[bytes]] = []
    try:
        cluster.start()
        for image in IMAGES:
            cluster.create_image(image, IMAGE_BYTES)
        for number, port in enumerate(ports):
            directory = base / f"gateway{number}"
            (directory / "state").mkdir(parents=True, exist_ok=True)
            config_path = directory / "odxtarget.json"
            config_path.write_text(json.dumps(gateway_config(number, port, len(ports), cluster, directory), indent=2) + "\n")
            log = open(directory / "odxtarget.log", "ab")
            with log:
                gateways.append(subprocess.Popen(
                    [sys.executable, "-m", "odxtarget", "serve", "--config", str(config_path)],
                    cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, start_new_session=True))
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not all(port_accepts(LOOPBACK, port) for port in ports):
            failed = [gateway for gateway in gateways if gateway.poll() is not None]
            if failed or time.monotonic() > deadline:
                print(f"run-cluster: a gateway did not start; see {base}/gateway*/odxtarget.log", file=sys.stderr)
                return 1
            time.sleep(0.1)
        for port in ports:
            print(f"run-cluster: gateway on {LOOPBACK}:{port}: {IQN}, LUNs 0 and 1 (RBD images "
                  f"{', '.join(IMAGES)}, {IMAGE_BYTES >> 30} GiB each)", flush=True)
        print("run-cluster: Ctrl-C stops the gateways and the cluster", flush=True)
        while not stop.is_set():
            if any(gateway.poll() is not None for gateway in gateways):
                print(f"run-cluster: a gateway exited; see {base}/gateway*/odxtarget.log", file=sys.stderr)
                return 1
            stop.wait(0.5)
        return 0
    finally:
        for gateway in gateways:
            if gateway.poll() is None:
                gateway.send_signal(signal.SIGTERM)
        for gateway in gateways:
            try:
                gateway.wait(timeout=20)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()
        cluster.stop()
        print("run-cluster: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
