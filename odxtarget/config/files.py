"""The configuration file on disk: reading it (``load_config``) and writing it
(``save_config``, atomically and privately, since it may hold CHAP secrets).
"""

from __future__ import annotations

import json
from typing import Any

from odxtarget.atomic_file import replace_file
from odxtarget.config.dump import dump_config
from odxtarget.config.model import DaemonConfig
from odxtarget.config.parser import ConfigError, parse_config

DEFAULT_CONFIG_PATH = "/etc/odxtarget/config.json"


class _JsonObject(dict):
    """A decoded JSON object that remembers keys the file repeated (json keeps the last)."""

    duplicate_keys: list[str]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _JsonObject:
        obj = cls()
        obj.duplicate_keys = []
        for key, value in pairs:
            if key in obj and key not in obj.duplicate_keys:
                obj.duplicate_keys.append(key)
            obj[key] = value
        return obj


def load_config(path: str) -> DaemonConfig:
    """Read and validate a JSON config file; relative paths in it resolve against its directory.

    Raises:
        ConfigError: the file is missing, unreadable, not JSON, or not a valid config.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise ConfigError(
            path,
            ["config file not found (write one with `odxtarget demo-config --dir DIR`,"
             " or pass --config FILE)"],
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, [f"cannot read config file: {error}"]) from None
    try:
        obj = json.loads(text, object_pairs_hook=_JsonObject.from_pairs)
    except json.JSONDecodeError as error:
        raise ConfigError(
            path, [f"line {error.lineno} column {error.colno}: invalid JSON: {error.msg}"]
        ) from None
    return parse_config(obj, path)


def save_config(obj: DaemonConfig | dict[str, Any], path: str) -> None:
    """Write a config file with mode 0600 (it may hold CHAP secrets) by ``replace_file``: after
    a crash the file is the old one or the new one, never a torn mix.

    Raises:
        OSError: the file could not be written.
    """
    if isinstance(obj, DaemonConfig):
        obj = dump_config(obj)
    replace_file(path, json.dumps(obj, indent=2) + "\n")
