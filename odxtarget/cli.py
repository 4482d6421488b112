"""The ``odxtarget`` command: ``serve``, ``check-config``, ``demo-config``, ``copy`` and
``import-targetcli``.

Exit status: 0 success, 1 a problem the operator can fix (the message says which, one line
per problem, no traceback), 2 a usage error (from argparse), 3 ``import-targetcli`` wrote a
configuration but reported settings it did not import as they were (docs/migrating.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
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
#: A command ended by SIGINT (Ctrl-C): 128 + the signal number, as shells report it.
EXIT_INTERRUPTED = 128 + 2
EXIT_IMPORT_DIFFERS = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="A userspace SCSI block target with an iSCSI front end and ODX copy offload.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the target until SIGTERM or SIGINT (SIGHUP reloads FILE)")
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
        epilog="URL syntax:  iscsi://[USER@]HOST[:PORT]/IQN/LUN[?lba=N&blocks=M]\n"
               "  lba     first logical block of the range (default 0)\n"
               "  blocks  number of logical blocks (default: to the end of the LU; when only one side\n"
               "          gives blocks, that count is used for both; when both do, they must match)\n"
               "  PORT defaults to 3260; USER is the CHAP user name. The CHAP secret comes from\n"
               "  $ODXTARGET_CHAP_SECRET or --chap-secret-file (USER%SECRET@ works too, but ps shows it);\n"
               "  mutual CHAP adds --chap-target-user and $ODXTARGET_CHAP_TARGET_SECRET or\n"
               "  --chap-target-secret-file.\n"
               "A /dev/sgN or /dev/sdX path (with the same ?lba=N&blocks=M) sends the commands through\n"
               "the kernel's SG_IO ioctl instead, to LUs the kernel's initiator has attached.\n"
               "Source and destination must have the same block size; ranges on one LUN must not overlap.\n"
               "Prints one line: bytes, seconds and method (odx, fallback, or odx+fallback); --json prints\n"
               "one JSON document instead. Progress goes to stderr: a bar on a terminal, else a line\n"
               "every 10 s. Ctrl-C stops the copy (exit status 130).",
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
                      help="when stderr is not a terminal, a progress line every second and a last one"
                           " (default: one every 10 s)")
    copy.add_argument("--initiator", "--initiator-name", dest="initiator_name", metavar="IQN", default=None,
                      help="initiator IQN to log in with (default: InitiatorName= of"
                           " /etc/iscsi/initiatorname.iscsi, else iqn.2026-11.org.odxtarget:copy)")
    copy.add_argument("--chap-user", metavar="NAME", default=None,
                      help="CHAP user name for URLs without USER@")
    copy.add_argument("--chap-secret-file", metavar="FILE", default=None,
                      help="read the CHAP secret from FILE (default: $ODXTARGET_CHAP_SECRET)")
    copy.add_argument("--chap-target-user", metavar="NAME", default=None,
                      help="mutual CHAP: the name the target must answer with")
    copy.add_argument("--chap-target-secret-file", metavar="FILE", default=None,
                      help="mutual CHAP: read the target's secret from FILE (default: $ODXTARGET_CHAP_TARGET_SECRET)")
    copy.add_argument("--json", action="store_true",
                      help="print one JSON document on stdout (bytes, seconds, method, ODX figures, error)")
    importer = commands.add_parser(
        "import-targetcli",
        help="turn targetcli's saveconfig.json into an odxtarget configuration on stdout",
        description="Print the odxtarget configuration for a targetcli/LIO saveconfig.json. Every setting"
                    " that is not imported, or is imported with different behaviour, is one line on"
                    " stderr; the exit status is then 3 (docs/migrating.md).",
    )
    importer.add_argument("file", metavar="SAVECONFIG.json", help="e.g. /etc/target/saveconfig.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    handler = {
        "serve": command_serve,
        "check-config": command_check_config,
        "demo-config": command_demo_config,
        "copy": command_copy,
        "import-targetcli": command_import_targetcli,
    }[arguments.command]
    return handler(arguments)


def command_serve(arguments: argparse.Namespace) -> int:
    from odxtarget.admin.protocol import default_control_socket
    from odxtarget.daemon import ADMIN_SETTINGS, AdminSettings, DaemonError, run

    # SIGHUP reloads once the daemon serves (daemon.serve); until then it must not kill it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(arguments.log_level or "info")
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        return _fail_config(error)
    if arguments.log_level is None:
        set_level(config.log_level)
    log.info("odxtarget %s starting with %s", __version__, os.path.abspath(arguments.config))
    admin = AdminSettings(
        control_socket=None if arguments.no_control_socket
        else arguments.control_socket or default_control_socket(config.state_dir),
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
    print(f"its metrics: http://{obj['metrics']['ip']}:{obj['metrics']['port']}/metrics (docs/metrics.md)")
    return EXIT_OK


def command_copy(arguments: argparse.Namespace) -> int:
    from odxtarget.initiator.identity import chap_credentials, choose_initiator_name, with_credentials
    from odxtarget.initiator.odx_copy import (CopyError, CopyFailed, CopyInterrupted, CopySummary, IscsiUrl,
                                              copy_range, parse_copy_url, zero_range)
    from odxtarget.initiator.progress import human_bytes, progress_for

    def report(summary: CopySummary | None, error: str | None, *, interrupted: bool = False,
               initiator: str | None = None) -> int:
        status = EXIT_INTERRUPTED if interrupted else EXIT_FAILURE if error else EXIT_OK
        if arguments.json:
            figures = summary.as_dict() if summary is not None else CopySummary(0, 0.0, "none").as_dict()
            rate = figures["bytes"] / figures["seconds"] if figures["seconds"] else 0.0
            print(json.dumps({"ok": status == EXIT_OK, **figures, "bytes_per_second": round(rate),
                              "initiator": initiator, "interrupted": interrupted, "error": error}))
        elif error is None:
            print(summary.line())
        if interrupted:
            done = (f": {human_bytes(summary.bytes)} of {human_bytes(summary.total_bytes)} written"
                    if summary is not None else " before the copy started")
            print(f"{PROGRAM}: copy interrupted{done}", file=sys.stderr)
        elif error is not None:
            print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return status

    expected = 1 if arguments.zero else 2
    if len(arguments.urls) != expected:
        usage = "copy --zero DST" if arguments.zero else "copy SRC DST"
        return report(None, f"{usage} takes {expected} URL{'s' if expected > 1 else ''}, got {len(arguments.urls)}")
    if arguments.no_odx and arguments.no_fallback:
        return report(None, "--no-odx and --no-fallback together leave no way to copy")
    initiator = None
    try:
        initiator = choose_initiator_name(arguments.initiator_name)
        credentials = chap_credentials(user=arguments.chap_user, secret_file=arguments.chap_secret_file,
                                       target_user=arguments.chap_target_user,
                                       target_secret_file=arguments.chap_target_secret_file)
        parsed = [parse_copy_url(url) for url in arguments.urls]
        if any(isinstance(url, IscsiUrl) and url.password is not None for url in parsed):
            print(f"{PROGRAM}: warning: a CHAP secret in a URL is visible to every user in ps; use"
                  " $ODXTARGET_CHAP_SECRET or --chap-secret-file", file=sys.stderr)
        urls = [with_credentials(url, credentials) for url in parsed]
        options = {
            "allow_fallback": not arguments.no_fallback,
            "offload": not arguments.no_odx,
            "progress": lambda total: progress_for(total, requested=arguments.progress),
            "initiator_name": initiator,
        }
        summary = zero_range(urls[0], **options) if arguments.zero else copy_range(urls[0], urls[1], **options)
    except CopyInterrupted as stopped:
        return report(stopped.summary, None, interrupted=True, initiator=initiator)
    except CopyFailed as failed:
        return report(failed.summary, str(failed), initiator=initiator)
    except CopyError as error:
        return report(None, str(error), initiator=initiator)
    except KeyboardInterrupt:
        return report(None, None, interrupted=True, initiator=initiator)
    return report(summary, None, initiator=initiator)


def command_import_targetcli(arguments: argparse.Namespace) -> int:
    from odxtarget.config.targetcli_import import TargetcliImportError, import_saveconfig

    try:
        with open(arguments.file, encoding="utf-8") as stream:
            saved = json.load(stream)
    except OSError as error:
        return _fail(f"cannot read {arguments.file}: {error.strerror or error}")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return _fail(f"{arguments.file}: not JSON: {error}")
    try:
        result = import_saveconfig(saved)
    except TargetcliImportError as error:
        return _fail(f"{arguments.file}: {error}")
    print(json.dumps(result.config, indent=2))
    for line in result.differences:
        print(f"{PROGRAM} import-targetcli: {line}", file=sys.stderr)
    return EXIT_IMPORT_DIFFERS if result.differences else EXIT_OK


def _fail(message: str) -> int:
    print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    return EXIT_FAILURE


def _fail_config(error: ConfigError) -> int:
    for problem in error.problems:
        print(f"{PROGRAM}: error: {error.source}: {problem}", file=sys.stderr)
    return EXIT_FAILURE


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
