"""What values the configuration file accepts, wherever they appear: the format's version,
the words, bounds and name rules it uses, and how sizes are spelled (docs/configuration.md).
"""

from __future__ import annotations

import re
from typing import Any

SCHEMA_VERSION = 1
SUPPORTED_FRONTENDS = ("native", "lio")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
BLOCK_SIZES = (512, 4096)
#: READ CAPACITY(16) reports logical blocks per physical block as a 4-bit exponent (SBC-4 5.20.2).
MAX_BLOCKS_PER_PHYSICAL_BLOCK = 1 << 15
MAX_LUN = 16383                 # SAM-5 4.7.7: the single-level flat LUN space
MAX_TPGT = 65535                # RFC 7143 13.9: a 16-bit tag
MAX_PORT = 65535
MAX_ISCSI_NAME_BYTES = 223      # RFC 3720 3.2.6.1
MAX_ALIAS_BYTES = 255           # RFC 7143 13.6: a short UTF-8 text
MIN_CHAP_SECRET_BYTES = 12      # RFC 7143 9.2.1: under 96 bits needs IPsec, which we lack
MAX_CHAP_SECRET_BYTES = 16      # RFC 7143 9.2.1 asks support up to 128 bits; Windows stops there
MAX_CHAP_NAME_BYTES = 255
MAX_SERIAL_CHARS = 64
STORAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: An RBD pool or image name: librbd refuses "/" and "@" (they separate pool, image and snapshot).
RBD_NAME = re.compile(r"[^/@\s\x00-\x1f\x7f]{1,255}")
SERIAL = re.compile(r"[\x21-\x7e]+")         # printable ASCII without spaces (SPC-4 7.8.16)
NAA6_WWN = re.compile(r"6[0-9a-fA-F]{31}")    # SPC-4 7.8.6.6.4: IEEE Registered Extended
SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
SIZE_TEXT = re.compile(r"\s*(\d+)\s*([KMGTkmgt]?)\s*")

# RFC 3720 3.2.6.3: iqn.yyyy-mm.reversed.domain[:anything]; eui. + 16 hex; naa. + 16/32 hex
# (RFC 3980). Characters are those RFC 3722 leaves after stringprep, restricted to ASCII.
IQN_NAME = re.compile(r"iqn\.(\d{4})-(\d{2})\.[a-z0-9-]+(\.[a-z0-9-]+)*(:[a-z0-9.:-]*)?")
EUI_NAME = re.compile(r"eui\.[0-9a-fA-F]{16}")
NAA_NAME = re.compile(r"naa\.([0-9a-fA-F]{16}|[0-9a-fA-F]{32})")


def describe_value(value: Any) -> str:
    """A JSON-flavoured description of a value, for "expected X, got Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'a string ("{shown}")'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_size(value: Any) -> int:
    """A byte count from an integer or a string such as ``"512"``, ``"64K"``, ``"1G"`` (binary).

    Raises:
        ValueError: anything else (the message is user-facing).
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size (integer or string), got {describe_value(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value
    match = SIZE_TEXT.fullmatch(value)
    if match is None:
        raise ValueError(
            f'invalid size "{value}": expected an integer or a number with a K, M, G or T suffix'
        )
    return int(match.group(1)) * SIZE_SUFFIXES[match.group(2).upper()]


def format_size(size: int) -> int | str:
    """The shortest exact spelling of a size: ``"1G"`` for 1 GiB, the integer otherwise."""
    for suffix in ("T", "G", "M", "K"):
        unit = SIZE_SUFFIXES[suffix]
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return size


def iscsi_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid iSCSI name (RFC 3720 3.2.6), or None when it is."""
    if len(name.encode("utf-8")) > MAX_ISCSI_NAME_BYTES:
        return f"is longer than {MAX_ISCSI_NAME_BYTES} bytes (RFC 3720 3.2.6.1)"
    if name != name.lower() and name.lower().startswith("iqn."):
        return f'must be lowercase (RFC 3720 3.2.6.1 names are case-folded): "{name.lower()}"'
    if name.startswith("iqn."):
        match = IQN_NAME.fullmatch(name)
        if match is None:
            return (
                "is not a valid iqn name: expected iqn.yyyy-mm.reversed.domain[:identifier] using"
                " only a-z, 0-9, '-', '.', ':' (RFC 3720 3.2.6.3.1)"
            )
        if not 1 <= int(match.group(2)) <= 12:
            return f"has month {match.group(2)} in its date (RFC 3720 3.2.6.3.1 wants yyyy-mm)"
        return None
    if name.startswith("eui."):
        return None if EUI_NAME.fullmatch(name) else (
            "is not a valid eui name: expected eui. and 16 hex digits (RFC 3720 3.2.6.3.2)"
        )
    if name.startswith("naa."):
        return None if NAA_NAME.fullmatch(name) else (
            "is not a valid naa name: expected naa. and 16 or 32 hex digits (RFC 3980)"
        )
    return 'must start with "iqn.", "eui." or "naa." (RFC 3720 3.2.6.3)'
