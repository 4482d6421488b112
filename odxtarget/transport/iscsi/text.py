"""The iSCSI key=value text codec (RFC 7143 6.1, 6.2).

Theory of operation: Login and Text PDUs carry a *logical text data segment*: UTF-8
``key=value`` pairs, each followed by one NUL. This module turns such a segment into an
ordered list of ``(key, value)`` pairs and back, and converts the value grammars of
RFC 7143 6.1 (boolean, numerical, range, list, binary) to Python values. It knows nothing
about what any key means: the key table lives in ``negotiation.py``.

Every malformation raises ``TextFormatError``; callers decide what it costs (a failed
login, or a Reject PDU in full feature phase).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Collection, Iterable

# RFC 7143 6.1: "A standard-label ... must not exceed 63 characters."
KEY_NAME_MAX = 63
# RFC 7143 6.1: "The maximum length of an individual value (not its encoded representation)
# is 255 bytes ... unless otherwise specified."
TEXT_VALUE_MAX = 255
# RFC 7143 4.2.7.1 (iSCSI names): at most 223 bytes.
ISCSI_NAME_MAX = 223
# Large binary values (CHAP_C, CHAP_R: at most 1024 bytes, RFC 7143 12.1.3) are written as
# "0x" + 2048 hex digits; unknown extension keys get the same generous bound.
LARGE_VALUE_MAX = 8192
# RFC 7143 12.1.3: CHAP_C and CHAP_R binary length "MUST NOT exceed 1024 bytes".
LARGE_BINARY_MAX_BYTES = 1024
# RFC 7143 6.1: numerical values are "always less than 2**64".
NUMERICAL_VALUE_LIMIT = 1 << 64

NUL = b"\x00"

# RFC 7143 6.2 answers that are not values.
REJECT = "Reject"
IRRELEVANT = "Irrelevant"
NOT_UNDERSTOOD = "NotUnderstood"
ANSWER_TOKENS = frozenset({REJECT, IRRELEVANT, NOT_UNDERSTOOD})

YES = "Yes"
NO = "No"

# RFC 7143 6.1 / 13.22: a standard-label (capital first, then letters, digits, . - + @ _),
# an "X-" private extension key (same grammar, so the first alternative covers it), or an
# "X#" public extension key registered with IANA.
_KEY_NAME = re.compile(r"(?:[A-Z][A-Za-z0-9.\-+@_]*|X#[A-Za-z0-9.\-+@_]+)\Z")
# What an unknown key may look like and still be answered NotUnderstood (RFC 7143 6.2): keys are
# case-sensitive, so "sENDtARGETS" is a key nobody defined rather than a malformed pair.
# Printable ASCII without "=", at most KEY_ECHO_MAX characters (the answer repeats the key).
_ECHOABLE_KEY = re.compile(r"[\x21-\x3c\x3e-\x7e]+\Z")
KEY_ECHO_MAX = 255
_DECIMAL_CONSTANT = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_HEX_DIGITS = re.compile(r"[0-9A-Fa-f]+\Z")


class TextFormatError(ValueError):
    """A text segment or a value breaks the RFC 7143 6.1 grammar."""


# Registered keys that break the capital-first rule of RFC 7143 6.1 (RFC 7144 2.1 defines this one).
NONCONFORMING_STANDARD_KEYS = frozenset({"iSCSIProtocolLevel"})


def is_valid_key_name(key: str) -> bool:
    if key in NONCONFORMING_STANDARD_KEYS:
        return True
    return len(key) <= KEY_NAME_MAX and _KEY_NAME.match(key) is not None


def is_echoable_key(key: str) -> bool:
    """A key that breaks the key-name grammar but can be answered ``NotUnderstood``."""
    return len(key) <= KEY_ECHO_MAX and _ECHOABLE_KEY.match(key) is not None


def is_extension_key(key: str) -> bool:
    """X- (private) and X# (public) extension keys, RFC 7143 13.22."""
    return key.startswith(("X-", "X#"))


def parse_text(data: bytes, *, value_limit: Callable[[str], int] | None = None,
               repeatable: Collection[str] = ()) -> list[tuple[str, str]]:
    """Split a logical text data segment into ordered ``(key, value)`` pairs.

    Args:
        data: the whole segment (all PDUs of a C-bit sequence concatenated, padding excluded).
        value_limit: maximum value length in bytes for a key; default ``LARGE_VALUE_MAX`` for all.
        repeatable: keys allowed to appear more than once (TargetName and TargetAddress in a
            SendTargets answer); every other key may appear once.

    A key outside the key-name grammar (RFC 7143 6.1) but made of printable ASCII is returned
    as it is: nobody defined it, so the negotiation answers it ``NotUnderstood``.

    Raises:
        TextFormatError: a pair without NUL terminator, without "=", with a key that is not
            printable ASCII, a value that is not UTF-8 or too long, or a key that appears twice
            (RFC 7143 6.2: a key is offered at most once in a negotiation).
    """
    if not data:
        return []
    if not data.endswith(NUL):
        raise TextFormatError("the last key=value pair is not NUL-terminated (RFC 7143 6.1)")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    # Extra NULs (empty pairs) carry nothing; some initiators pad with them, so they are skipped.
    for raw in data[:-1].split(NUL):
        if not raw:
            continue
        key_bytes, sep, value_bytes = raw.partition(b"=")
        if not sep:
            raise TextFormatError(f"pair without '=': {_show(raw)}")
        try:
            key = key_bytes.decode("ascii")
        except UnicodeDecodeError:
            raise TextFormatError(f"key is not ASCII: {_show(key_bytes)}") from None
        if not is_valid_key_name(key) and not is_echoable_key(key):
            raise TextFormatError(f"invalid key name {key!r} (RFC 7143 6.1: standard-label, at most "
                                  f"{KEY_NAME_MAX} characters)")
        limit = LARGE_VALUE_MAX if value_limit is None else value_limit(key)
        if len(value_bytes) > limit:
            raise TextFormatError(f"value of {key} is {len(value_bytes)} bytes, more than {limit}")
        try:
            value = value_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise TextFormatError(f"value of {key} is not UTF-8") from None
        if key in seen and key not in repeatable:
            raise TextFormatError(f"key {key} appears more than once (RFC 7143 6.2)")
        seen.add(key)
        pairs.append((key, value))
    return pairs


def encode_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Encode ``(key, value)`` pairs as NUL-terminated UTF-8; keys may repeat (TargetAddress)."""
    out = bytearray()
    for key, value in pairs:
        if not is_valid_key_name(key) and not is_echoable_key(key):
            raise TextFormatError(f"refusing to encode invalid key name {key!r}")
        encoded = value.encode("utf-8")
        if NUL in encoded:
            raise TextFormatError(f"value of {key} contains NUL")
        out += key.encode("ascii")
        out += b"="
        out += encoded
        out += NUL
    return bytes(out)


# --- value grammars (RFC 7143 6.1) -------------------------------------------------------


def parse_boolean(value: str) -> bool:
    """boolean-value: exactly "Yes" or "No" (values are case sensitive, RFC 7143 6.1)."""
    if value == YES:
        return True
    if value == NO:
        return False
    raise TextFormatError(f"not a boolean-value: {value!r}")


def format_boolean(flag: bool) -> str:
    return YES if flag else NO


def parse_numerical(value: str, minimum: int = 0, maximum: int = NUMERICAL_VALUE_LIMIT - 1) -> int:
    """numerical-value: decimal-constant or hex-constant, then range-checked.

    Raises:
        TextFormatError: bad syntax, or the number lies outside ``[minimum, maximum]``.
    """
    if value[:2] in ("0x", "0X"):
        digits = value[2:]
        if not _HEX_DIGITS.match(digits):
            raise TextFormatError(f"bad hex-constant {value!r}")
        number = int(digits, 16)
    elif _DECIMAL_CONSTANT.match(value):
        number = int(value)
    else:
        raise TextFormatError(f"not a numerical-value: {value!r}")
    if number >= NUMERICAL_VALUE_LIMIT:
        raise TextFormatError(f"numerical-value {value!r} is not less than 2**64")
    if not minimum <= number <= maximum:
        raise TextFormatError(f"{number} is outside {minimum}..{maximum}")
    return number


def parse_range(value: str, minimum: int = 0, maximum: int = NUMERICAL_VALUE_LIMIT - 1) -> tuple[int, int]:
    """range: two numerical values separated by "~", the second not smaller than the first."""
    low_text, sep, high_text = value.partition("~")
    if not sep:
        raise TextFormatError(f"not a range: {value!r}")
    low = parse_numerical(low_text, minimum, maximum)
    high = parse_numerical(high_text, minimum, maximum)
    if high < low:
        raise TextFormatError(f"range {value!r} ends below its start")
    return low, high


def parse_list(value: str) -> list[str]:
    """list-of-values: comma-separated, no empty members."""
    members = value.split(",")
    if any(not member for member in members):
        raise TextFormatError(f"empty member in list-of-values {value!r}")
    return members


def parse_binary(value: str, max_bytes: int = LARGE_BINARY_MAX_BYTES) -> bytes:
    """binary-value written as hex-constant (0x) or base64-constant (0b).

    RFC 7143 6.1: a hex-constant of n digits is (n+1)//2 bytes long, so an odd digit count has
    an implied leading zero.
    """
    prefix, body = value[:2], value[2:]
    if prefix in ("0x", "0X"):
        if not _HEX_DIGITS.match(body):
            raise TextFormatError(f"bad hex-constant {_short(value)}")
        if len(body) % 2:
            body = "0" + body
        raw = bytes.fromhex(body)
    elif prefix in ("0b", "0B"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise TextFormatError(f"bad base64-constant {_short(value)}") from None
        if not raw:
            raise TextFormatError("empty base64-constant")
    else:
        raise TextFormatError(f"binary value needs a 0x or 0b prefix: {_short(value)}")
    if len(raw) > max_bytes:
        raise TextFormatError(f"binary value of {len(raw)} bytes exceeds {max_bytes}")
    return raw


def format_hex(raw: bytes) -> str:
    return "0x" + raw.hex()


def format_base64(raw: bytes) -> str:
    return "0b" + base64.b64encode(raw).decode("ascii")


def _show(raw: bytes) -> str:
    return repr(raw[:40]) + ("..." if len(raw) > 40 else "")


def _short(value: str) -> str:
    return repr(value[:40]) + ("..." if len(value) > 40 else "")
