"""The configuration sections that set fields of a limits dataclass: ``odx`` (the copy
manager's ``CopyLimits``) and ``iscsi`` (the native iSCSI front end's ``IscsiLimits``).

Their keys, defaults and kinds are read from the dataclasses' fields and never repeated here,
so a field added there is a key of the file with the same default (docs/configuration.md, "ODX
limits" and "iSCSI limits"). Both dataclass modules import nothing, so reading a config still
imports neither the copy manager nor the iSCSI server.

* ``odx``: the CopyLimits fields that carry ``CONFIG_METADATA``; it gives the kind and rules.
* ``iscsi``: every IscsiLimits field. A float is seconds, an int named ``*_bytes`` a size, any
  other int an integer; IscsiLimits itself checks the rules between fields.

Every value of both sections must be positive: they are all counts, sizes and durations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from odxtarget.config.vocabulary import format_size
from odxtarget.copy.limits import CONFIG_METADATA, CopyLimits
from odxtarget.transport.iscsi.limits import IscsiLimits

Kind = Literal["integer", "size", "seconds"]


@dataclass(frozen=True, slots=True)
class LimitKey:
    """One key of a limits section: a field of the section's dataclass, and how it is spelled."""

    name: str
    kind: Kind                       # "integer", "size" (bytes; "64M" accepted) or "seconds"
    default: int | float
    maximum: int | float | None = None
    multiple_of: int | None = None   # sizes only
    at_most: str | None = None       # another field of the dataclass this one must not exceed

    @property
    def value_type(self) -> type:
        """The Python type of a value: float for seconds, int otherwise."""
        return float if self.kind == "seconds" else int

    def spelled(self, value: int | float) -> int | float | str:
        """``value`` as the file writes it: sizes with a binary suffix where exact."""
        return format_size(value) if self.kind == "size" else value


@dataclass(frozen=True, slots=True)
class LimitSection:
    """A top-level section of the file whose keys are fields of ``limits_class``."""

    name: str
    limits_class: type
    keys: tuple[LimitKey, ...]

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)

    def key(self, name: str) -> LimitKey:
        """The key ``name``; KeyError when the file has no such key in this section."""
        for key in self.keys:
            if key.name == name:
                return key
        raise KeyError(f"{name!r} is not a key of the {self.name} section")

    def default(self, field_name: str) -> Any:
        """The default of any field of ``limits_class``, a key of the file or not."""
        return next(item.default for item in dataclasses.fields(self.limits_class)
                    if item.name == field_name)

    def shown_default(self, field_name: str) -> Any:
        """``default(field_name)`` as the file spells it."""
        default = self.default(field_name)
        return self.key(field_name).spelled(default) if field_name in self.key_names else default


def _copy_limits_key(item: dataclasses.Field) -> LimitKey:
    rules: dict[str, Any] = dict(item.metadata[CONFIG_METADATA])
    return LimitKey(item.name, rules.pop("kind"), item.default, **rules)


def _iscsi_limits_key(item: dataclasses.Field) -> LimitKey:
    if item.type in ("float", float):
        kind: Kind = "seconds"
    elif item.name.endswith("_bytes"):
        kind = "size"
    else:
        kind = "integer"
    return LimitKey(item.name, kind, item.default)


ODX_SECTION = LimitSection(
    "odx", CopyLimits,
    tuple(_copy_limits_key(item) for item in dataclasses.fields(CopyLimits)
          if CONFIG_METADATA in item.metadata),
)
ISCSI_SECTION = LimitSection(
    "iscsi", IscsiLimits, tuple(_iscsi_limits_key(item) for item in dataclasses.fields(IscsiLimits)),
)

# Single facts of the odx section, for code that names one of them.
ODX_INTEGER_KEYS = tuple(key.name for key in ODX_SECTION.keys if key.kind == "integer")
ODX_SIZE_KEYS = tuple(key.name for key in ODX_SECTION.keys if key.kind == "size")
ODX_SIZE_GRANULE = ODX_SECTION.key("max_token_transfer_bytes").multiple_of
MAX_RANGE_DESCRIPTORS = ODX_SECTION.key("max_range_descriptors").maximum
MAX_INACTIVITY_TIMEOUT = ODX_SECTION.key("max_inactivity_timeout").maximum
MAX_WRITE_USING_TOKEN_BUDGET = ODX_SECTION.key("write_using_token_budget").maximum
DEFAULT_INACTIVITY_TIMEOUT = ODX_SECTION.key("default_inactivity_timeout").default
DEFAULT_MAX_INACTIVITY_TIMEOUT = ODX_SECTION.key("max_inactivity_timeout").default
DEFAULT_OPTIMAL_TRANSFER_BYTES = ODX_SECTION.key("optimal_transfer_bytes").default
DEFAULT_MAX_TOKEN_TRANSFER_BYTES = ODX_SECTION.key("max_token_transfer_bytes").default
