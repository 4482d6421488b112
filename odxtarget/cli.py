"""The ``odxtarget`` command: ``serve``, ``check-config``, ``demo-config`` and ``copy``.

Exit status: 0 success, 1 a problem the operator can fix (the message says which, one line
per problem, no traceback), 2 a usage error (from argparse).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from odxtarget import __version__
from odxtarget.config import (
    DEFAULT_CONFIG_PATH,
    LOG_LEVELS,
    ConfigError,
    demo_config_dict,
    dump_config,
    load_config,
    parse_config,
    save_config,
)
from odxtarget.logging_setup import configure_logging, set_level

log = logging.getLogger("odxtarget")

PROGRAM = "odxtarget"
DEMO_CONFIG_NAME = "odxtarget.json"
EXIT_OK = 0
EXIT_FAILURE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="A userspace SCSI block target with an iSCSI front end and ODX copy offload.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the target until SIGTERM or SIGINT")
    serve.add_argument(
        "--config", default=DEFAULT_CONFIG_PATH, metavar="FILE",
        help=f"configuration file (default: {DEFAULT_CONFIG_PATH})",
    )
    serve.add_argument(
        "--log-level", choices=LOG_LEVELS, type=str.lower, metavar="LEVEL",
        help="debug, info, warning, error or critical (default: the config's log_level)",
    )
    control = serve.add_mutually_exclusive_group()
    control.add_argument(
        "--control-socket", metavar="PATH",
        help="where odxtargetcli reaches the daemon (default: $ODXTARGET_CONTROL_SOCKET, else"
             " STATE_DIR/control.sock)",
    )
    control.add_argument(
        "--no-control-socket", action="store_true", help="run without the admin control socket",
    )

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", metavar="FILE")
    check.add_argument(
        "--dump", action="store_true",
        help="print the configuration as odxtarget understood it (paths resolved, defaults filled)",
    )

    demo = commands.add_parser(
        "demo-config", help=f"write a demo configuration (DIR/{DEMO_CONFIG_NAME}) with two sparse 1 GiB LUNs",
    )
    demo.add_argument("--dir", required=True, metavar="DIR", help="where the config and disk images go")
    demo.add_argument("--port", type=int, default=3260, metavar="N", help="TCP port on 127.0.0.1 (default 3260)")
    demo.add_argument("--force", action="store_true", help="overwrite an existing config file")

    copy = commands.add_parser(
        "copy", help="copy (or zero) LUN ranges over iSCSI with ODX offload, falling back to READ/WRITE",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Copy SRC onto DST with POPULATE TOKEN / WRITE USING TOKEN (ODX), or zero DST with\n"
                    "the block device zero token (--zero DST). Falls back to READ/WRITE of 1 MiB when a\n"
                    "target has no ODX, unless --no-fallback.",
        epilog="URL syntax:  iscsi://[USER[%PASSWORD]@]HOST[:PORT]/IQN/LUN[?lba=N&blocks=M]\n"
               "  lba     first logical block of the range (default 0)\n"
               "  blocks  number of logical blocks (default: to the end of the LU; when only one side\n"
               "          gives blocks, that count is used for both; when both do, they must match)\n"
               "  PORT defaults to 3260; USER%PASSWORD are CHAP credentials.\n"
               "A /dev/sgN or /dev/sdX path (with the same ?lba=N&blocks=M) sends the commands through\n"
               "the kernel's SG_IO ioctl instead, to LUs the kernel's initiator has attached.\n"
               "Source and destination must have the same block size; ranges on one LUN must not overlap.\n"
               "Prints one line: bytes, seconds and method (odx, fallback, or odx+fallback).",
    )
    copy.add_argument("urls", nargs="+", metavar="URL",
                      help="SRC DST, or just DST with --zero (iscsi:// URLs or /dev/sgN, /dev/sdX)")
    copy.add_argument("--zero", action="store_true",
                      help="zero DST with the block device zero ROD token (FFFF0001h)")
    copy.add_argument("--no-fallback", action="store_true",
                      help="fail instead of copying with READ/WRITE when a target refuses ODX")
    copy.add_argument("--no-odx", action="store_true",
                      help="copy (or zero) with READ/WRITE only, without trying ODX: to compare the two")
    copy.add_argument("--progress", action="store_true",
                      help="show percentage and MB/s on stderr even when it is not a terminal")
    copy.add_argument("--initiator-name", metavar="IQN", default=None,
                      help="initiator IQN to log in with (default: iqn.2026-11.org.odxtarget:copy)")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    handler = {
        "serve": command_serve,
        "check-config": command_check_config,
        "demo-config": command_demo_config,
        "copy": command_copy,
    }[arguments.command]
    return handler(arguments)


def command_serve(arguments: argparse.Namespace) -> int:
    from odxtarget.admin.protocol import default_control_socket
    from odxtarget.daemon import ADMIN_SETTINGS, AdminSettings, DaemonError, run

    configure_logging(arguments.log_level or "info")
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        return _fail_config(error)
    if arguments.log_level is None:
        set_level(config.log_level)
    log.info("odxtarget %s starting with %s", __version__, os.path.abspath(arguments.config))
    admin = None
    if not arguments.no_control_socket:
        admin = AdminSettings(
            control_socket=arguments.control_socket or default_control_socket(config.state_dir),
            config_path=os.path.abspath(arguments.config),
        )
    token = ADMIN_SETTINGS.set(admin)
    try:
        run(config)
    except DaemonError as error:
        return _fail(str(error))
    finally:
        ADMIN_SETTINGS.reset(token)
    return EXIT_OK


def command_check_config(arguments: argparse.Namespace) -> int:
    from odxtarget.daemon import summary_lines

    configure_logging("warning")
    try:
        config = load_config(arguments.file)
    except ConfigError as error:
        return _fail_config(error)
    if arguments.dump:
        print(json.dumps(dump_config(config), indent=2))
        return EXIT_OK
    luns = sum(len(target.luns) for target in config.targets)
    print(
        f"{arguments.file}: OK: {_count(len(config.storage_objects), 'storage object')},"
        f" {_count(len(config.targets), 'target')}, {_count(luns, 'LUN')}"
    )
    for line in summary_lines(config):
        print(line)
    return EXIT_OK


def command_demo_config(arguments: argparse.Namespace) -> int:
    configure_logging("warning")
    directory = arguments.dir
    path = os.path.join(directory, DEMO_CONFIG_NAME)
    obj = demo_config_dict(port=arguments.port)
    try:
        parse_config(obj, path)  # the port is the only user input; check it like any config
    except ConfigError as error:
        return _fail_config(error)
    if os.path.exists(path) and not arguments.force:
        return _fail(f"{path} already exists (use --force to overwrite it)")
    try:
        os.makedirs(directory, exist_ok=True)
        save_config(obj, path)
    except OSError as error:
        return _fail(f"cannot write {path}: {error.strerror or error}")
    print(f"wrote {path}")
    print(f"start the target with: {PROGRAM} serve --config {path}")
    return EXIT_OK


def command_copy(arguments: argparse.Namespace) -> int:
    from odxtarget.initiator.odx_copy import CopyError, copy_range, parse_copy_url, progress_stream, zero_range

    expected = 1 if arguments.zero else 2
    if len(arguments.urls) != expected:
        usage = "copy --zero DST" if arguments.zero else "copy SRC DST"
        return _fail(f"{usage} takes {expected} URL{'s' if expected > 1 else ''}, got {len(arguments.urls)}")
    if arguments.no_odx and arguments.no_fallback:
        return _fail("--no-odx and --no-fallback together leave no way to copy")
    options: dict[str, object] = {
        "allow_fallback": not arguments.no_fallback,
        "offload": not arguments.no_odx,
        "progress": progress_stream(arguments.progress),
    }
    if arguments.initiator_name:
        options["initiator_name"] = arguments.initiator_name
    try:
        urls = [parse_copy_url(url) for url in arguments.urls]
        summary = zero_range(urls[0], **options) if arguments.zero else copy_range(urls[0], urls[1], **options)
    except CopyError as error:
        return _fail(str(error))
    print(summary.line())
    return EXIT_OK


def _fail(message: str) -> int:
    print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    return EXIT_FAILURE


def _fail_config(error: ConfigError) -> int:
    for problem in error.problems:
        print(f"{PROGRAM}: error: {error.source}: {problem}", file=sys.stderr)
    return EXIT_FAILURE


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
