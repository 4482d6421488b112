"""Who ``odxtarget copy`` logs in as: the initiator name and the CHAP credentials
(docs/odx.md, "odxtarget copy").

The initiator name is ``--initiator``, else the ``InitiatorName=`` line of open-iscsi's
``/etc/iscsi/initiatorname.iscsi`` (so the copy logs in as the host, and the host's ACLs
apply), else ``COPY_INITIATOR_NAME``. ``$ODXTARGET_INITIATOR_NAME_FILE`` names another file.

CHAP secrets never need to be on the command line, where ``ps`` shows them to every user:
the initiator's secret comes from ``--chap-secret-file`` or ``$ODXTARGET_CHAP_SECRET``, the
secret the target must answer with for mutual CHAP (RFC 7143 12.1.3) from
``--chap-target-secret-file`` or ``$ODXTARGET_CHAP_TARGET_SECRET``. A ``user%secret@`` in an
iscsi:// URL still works and wins for that URL.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from odxtarget.config import iscsi_name_problem
from odxtarget.initiator import sg_io
from odxtarget.initiator.odx_copy import COPY_INITIATOR_NAME, CopyError, IscsiUrl

#: open-iscsi's initiator name file (iscsid.conf(5), iscsi-iname(8)).
INITIATOR_NAME_FILE = "/etc/iscsi/initiatorname.iscsi"
INITIATOR_NAME_FILE_ENVIRONMENT = "ODXTARGET_INITIATOR_NAME_FILE"
INITIATOR_NAME_KEY = "InitiatorName="
CHAP_SECRET_ENVIRONMENT = "ODXTARGET_CHAP_SECRET"
CHAP_TARGET_SECRET_ENVIRONMENT = "ODXTARGET_CHAP_TARGET_SECRET"


def initiator_name_from_file(path: str) -> str | None:
    """The ``InitiatorName=`` value of an open-iscsi initiator name file; None when the file
    is absent or unreadable (not root) or has no such line.

    Raises:
        CopyError: the line names something that is not an iSCSI name.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise CopyError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    for line in lines:
        line = line.strip()
        if line.startswith(INITIATOR_NAME_KEY):
            name = line[len(INITIATOR_NAME_KEY):].strip()
            problem = iscsi_name_problem(name)
            if problem is not None:
                raise CopyError(f"{path}: InitiatorName {name!r} {problem}")
            return name
    return None


def choose_initiator_name(given: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """``given``, else the initiator name file's, else ``COPY_INITIATOR_NAME``."""
    if given:
        return given
    path = environ.get(INITIATOR_NAME_FILE_ENVIRONMENT) or INITIATOR_NAME_FILE
    return initiator_name_from_file(path) or COPY_INITIATOR_NAME


def read_secret_file(path: str) -> str:
    """A secret from a file: its first line, without the line ending.

    Raises:
        CopyError: unreadable or empty.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            secret = handle.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        raise CopyError(f"cannot read the secret file {path}: {getattr(error, 'strerror', None) or error}") from None
    if not secret:
        raise CopyError(f"the secret file {path} is empty")
    return secret


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """CHAP for every iscsi:// URL that does not carry its own."""

    user: str | None = None
    secret: str | None = None
    target_user: str | None = None
    target_secret: str | None = None


def chap_credentials(*, user: str | None, secret_file: str | None, target_user: str | None,
                     target_secret_file: str | None, environ: Mapping[str, str] = os.environ) -> ChapCredentials:
    """The credentials the options and the environment give (a file wins over the variable).

    Raises:
        CopyError: a secret file cannot be read, or mutual CHAP is half given.
    """
    secret = read_secret_file(secret_file) if secret_file else environ.get(CHAP_SECRET_ENVIRONMENT) or None
    target_secret = (read_secret_file(target_secret_file) if target_secret_file
                     else environ.get(CHAP_TARGET_SECRET_ENVIRONMENT) or None)
    if target_user is not None and target_secret is None:
        raise CopyError(f"--chap-target-user needs the target's secret: --chap-target-secret-file FILE or"
                        f" ${CHAP_TARGET_SECRET_ENVIRONMENT}")
    if target_secret_file is not None and target_user is None:
        raise CopyError("--chap-target-secret-file needs --chap-target-user NAME (the target's CHAP name)")
    return ChapCredentials(user, secret, target_user, target_secret if target_user is not None else None)


def with_credentials(url: IscsiUrl | sg_io.DeviceUrl, credentials: ChapCredentials) -> IscsiUrl | sg_io.DeviceUrl:
    """``url`` with the CHAP it lacks filled in from ``credentials``.

    Raises:
        CopyError: a CHAP user name with no secret anywhere, or mutual CHAP without CHAP.
    """
    if not isinstance(url, IscsiUrl):
        return url
    user = url.user if url.user is not None else credentials.user
    password = url.password if url.password is not None else credentials.secret
    if user is None:
        if credentials.target_user is not None:
            raise CopyError(f"{url.host}:{url.port}/{url.iqn}: mutual CHAP needs CHAP as well"
                            " (a user name: --chap-user or user@ in the URL)")
        return url
    if password is None:
        raise CopyError(f"CHAP user {user} has no secret: set ${CHAP_SECRET_ENVIRONMENT} or --chap-secret-file FILE")
    return dataclasses.replace(url, user=user, password=password, target_user=credentials.target_user,
                               target_password=credentials.target_secret)
