"""Where ``odxtargetcli`` finds the daemon's control socket (docs/admin.md, "Finding the daemon").

An explicit choice wins and is used as given, in this order: ``--socket PATH``, then
``$ODXTARGET_CONTROL_SOCKET``, then the socket of the daemon a ``--config FILE`` describes
(``<state_dir>/control.sock``, the path ``odxtarget serve --config FILE`` listens on). Without
one, the first of ``SEARCHED_SOCKETS`` that exists and is a socket is used: ``run/control.sock``
under the current directory (what ``make run`` serves from a checkout), ``control.sock`` in
the current directory (a state directory), ``/run/odxtarget/control.sock`` (a daemon started
by systemd) and ``/var/lib/odxtarget/control.sock`` (the default ``state_dir``). When none
exists the error names every place searched.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping

from odxtarget.admin.client import DaemonNotRunning
from odxtarget.admin.protocol import CONTROL_SOCKET_NAME, RUN_CONTROL_SOCKET, SOCKET_ENVIRONMENT, AdminError
from odxtarget.config import ConfigError, DaemonConfig, load_config

#: ``make run``'s directory under a checkout (Makefile RUN_DIR) and the demo's state_dir.
CHECKOUT_RUN_DIR = "run"


class SocketNotFound(DaemonNotRunning):
    """No explicit socket was given and none of the searched places holds one."""


def searched_sockets(cwd: str) -> list[str]:
    """The places searched when nothing names a socket, in order."""
    return [
        os.path.join(cwd, CHECKOUT_RUN_DIR, CONTROL_SOCKET_NAME),
        os.path.join(cwd, CONTROL_SOCKET_NAME),
        RUN_CONTROL_SOCKET,
        os.path.join(DaemonConfig().state_dir, CONTROL_SOCKET_NAME),
    ]


def is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def config_socket(config_path: str) -> str:
    """The control socket ``odxtarget serve --config config_path`` listens on by default."""
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise AdminError(f"{error.source}: {error.problems[0] if error.problems else 'invalid'}") from None
    return os.path.join(config.state_dir, CONTROL_SOCKET_NAME)


def locate_control_socket(socket: str | None = None, config_path: str | None = None, *,
                          environ: Mapping[str, str] = os.environ, cwd: str | None = None,
                          exists: Callable[[str], bool] = is_socket) -> str:
    """The control socket to use (the module docstring gives the order).

    Raises:
        SocketNotFound: nothing named one and none of the searched places exists.
        AdminError: ``config_path`` is not a valid configuration.
    """
    if socket:
        return socket
    if environ.get(SOCKET_ENVIRONMENT):
        return environ[SOCKET_ENVIRONMENT]
    if config_path:
        return config_socket(config_path)
    searched = searched_sockets(cwd if cwd is not None else os.getcwd())
    for path in searched:
        if exists(path):
            return path
    raise SocketNotFound(
        f"odxtarget is not running (no control socket at {', '.join(searched)}; name one with"
        f" --socket PATH, ${SOCKET_ENVIRONMENT} or --config FILE)")
