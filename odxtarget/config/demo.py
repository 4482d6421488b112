"""The demo configuration that ``odxtarget demo-config`` writes and ``make run`` serves
(README.md, "Running"; docs/configuration.md, "Examples")."""

from __future__ import annotations

from typing import Any

from odxtarget.config.vocabulary import SCHEMA_VERSION

#: Where the demo serves its Prometheus metrics (docs/metrics.md): http://127.0.0.1:9796/metrics
DEMO_METRICS_PORT = 9796


def demo_config_dict(port: int = 3260) -> dict[str, Any]:
    """The demo configuration: two sparse 1 GiB LUNs next to the config file, open to anyone
    on 127.0.0.1, and its metrics on 127.0.0.1:9796. Image paths are relative, so the file
    works wherever it is written."""
    return {
        "schema_version": SCHEMA_VERSION,
        "frontend": "native",
        "state_dir": ".",
        "log_level": "info",
        "storage_objects": [
            {
                "name": name,
                "size": "1G",
                "block_size": 512,
                "read_only": False,
                "serial": None,
                "wwn": None,
                "write_cache": True,
                "extents": [{"path": f"{name}.img", "offset": 0, "length": None}],
            }
            for name in ("disk0", "disk1")
        ],
        "targets": [
            {
                "iqn": "iqn.2026-11.org.odxtarget:demo",
                "tpgt": 1,
                "alias": None,
                "portals": [{"ip": "127.0.0.1", "port": port}],
                "luns": [
                    {"lun": 0, "storage_object": "disk0"},
                    {"lun": 1, "storage_object": "disk1"},
                ],
                "demo_mode": True,
                "chap": None,
                "acls": [],
            }
        ],
        "metrics": {"ip": "127.0.0.1", "port": DEMO_METRICS_PORT},
    }
