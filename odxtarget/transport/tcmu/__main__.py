"""``python -m odxtarget.transport.tcmu --config FILE``: serve a configuration through LIO.

A stand-alone runner until ``odxtarget serve`` starts the LIO front end for
``"frontend": "lio"`` itself (the guest test suite uses it). Exit status 0 after SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

from odxtarget.config import ConfigError, parse_config
from odxtarget.logging_setup import configure_logging

log = logging.getLogger("odxtarget")


def load_lio_config(path: str):
    """Load a config file whose frontend may be "lio" (config.py does not accept it yet)."""
    with open(path, encoding="utf-8") as file:
        obj = json.load(file)
    frontend = obj.get("frontend", "native")
    if frontend == "lio":
        obj["frontend"] = "native"
    config = parse_config(obj, path)
    config.frontend = frontend
    return config


async def serve(config, ready_file: str | None, remove_on_stop: bool) -> None:
    from odxtarget.scsi.lu import LogicalUnit, LogicalUnitConfig
    from odxtarget.storage.extents import FileExtentBackend
    from odxtarget.transport.tcmu.frontend import LioFrontend

    backends, units = [], {}
    for so in config.storage_objects:
        backend = FileExtentBackend(so.extents, so.size, read_only=so.read_only)
        backends.append(backend)
        units[so.name] = LogicalUnit(LogicalUnitConfig(
            name=so.name, backend=backend, block_size=so.block_size, read_only=so.read_only,
            serial=so.serial, wwn=so.wwn, write_cache=so.write_cache))
    frontend = LioFrontend(config, units, remove_on_stop=remove_on_stop)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await frontend.start()
        log.info("serving %d storage objects through LIO", len(units))
        if ready_file:
            with open(ready_file, "w", encoding="ascii") as file:
                file.write(f"{os.getpid()}\n")
        await stop.wait()
        await frontend.shutdown()
    finally:
        for backend in backends:
            backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m odxtarget.transport.tcmu")
    parser.add_argument("--config", required=True)
    parser.add_argument("--ready-file", help="written with our pid once LIO is configured")
    parser.add_argument("--remove-on-stop", action="store_true")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_lio_config(args.config)
    except (ConfigError, OSError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    asyncio.run(serve(config, args.ready_file, args.remove_on_stop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
