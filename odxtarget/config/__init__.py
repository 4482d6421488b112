"""The daemon's configuration: its model, and its JSON file format (docs/configuration.md).

``load_config`` reads a file, ``parse_config`` validates an already-decoded object, and
``dump_config`` turns a model back into the JSON shape (``parse_config(dump_config(c)) == c``).
Every problem is reported with the JSON path of the value at fault, all at once, in one
``ConfigError``; suspicious but legal settings are logged on the ``odxtarget.config`` logger.

One concept per module, all re-exported here:

* ``model``: the dataclasses (``DaemonConfig`` and its parts);
* ``vocabulary``: the values the file accepts (bounds, names, sizes);
* ``limit_sections``: the ``odx`` and ``iscsi`` sections, derived from CopyLimits and IscsiLimits;
* ``parser``: validation (``parse_config``, ``ConfigError``);
* ``dump``: the model back to JSON (``dump_config``);
* ``files``: the file on disk (``load_config``, ``save_config``);
* ``demo``: the demo configuration (``demo_config_dict``).
"""

from odxtarget.config.demo import demo_config_dict
from odxtarget.config.dump import dump_config
from odxtarget.config.files import DEFAULT_CONFIG_PATH, load_config, save_config
from odxtarget.config.limit_sections import (
    DEFAULT_INACTIVITY_TIMEOUT,
    DEFAULT_MAX_INACTIVITY_TIMEOUT,
    DEFAULT_MAX_TOKEN_TRANSFER_BYTES,
    DEFAULT_OPTIMAL_TRANSFER_BYTES,
    ISCSI_SECTION,
    MAX_INACTIVITY_TIMEOUT,
    MAX_RANGE_DESCRIPTORS,
    MAX_WRITE_USING_TOKEN_BUDGET,
    ODX_INTEGER_KEYS,
    ODX_SECTION,
    ODX_SIZE_GRANULE,
    ODX_SIZE_KEYS,
    LimitKey,
    LimitSection,
)
from odxtarget.config.model import (
    AclConfig,
    BlockConfig,
    ChapConfig,
    DaemonConfig,
    ExtentConfig,
    LunMapping,
    MappedLunConfig,
    MetricsConfig,
    OdxConfig,
    PortalConfig,
    RbdConfig,
    StorageObjectConfig,
    TargetConfig,
    format_portal,
    port_group_of,
    resolve_extent_length,
)
from odxtarget.config.parser import ConfigError, log, parse_config
from odxtarget.config.vocabulary import (
    BLOCK_SIZES,
    EUI_NAME,
    IQN_NAME,
    LOG_LEVELS,
    MAX_ALIAS_BYTES,
    MAX_BLOCKS_PER_PHYSICAL_BLOCK,
    MAX_CHAP_NAME_BYTES,
    MAX_CHAP_SECRET_BYTES,
    MAX_ISCSI_NAME_BYTES,
    MAX_LUN,
    MAX_PORT,
    MAX_SERIAL_CHARS,
    MAX_TPGT,
    MIN_CHAP_SECRET_BYTES,
    NAA6_WWN,
    NAA_NAME,
    RBD_NAME,
    SCHEMA_VERSION,
    SERIAL,
    SIZE_SUFFIXES,
    SIZE_TEXT,
    STORAGE_NAME,
    SUPPORTED_FRONTENDS,
    format_size,
    iscsi_name_problem,
    parse_size,
)

__all__ = [
    "AclConfig", "BlockConfig", "BLOCK_SIZES", "ChapConfig", "ConfigError", "DEFAULT_CONFIG_PATH",
    "DEFAULT_INACTIVITY_TIMEOUT", "DEFAULT_MAX_INACTIVITY_TIMEOUT", "DEFAULT_MAX_TOKEN_TRANSFER_BYTES",
    "DEFAULT_OPTIMAL_TRANSFER_BYTES", "DaemonConfig", "EUI_NAME", "ExtentConfig", "IQN_NAME", "format_portal",
    "ISCSI_SECTION", "LOG_LEVELS", "LimitKey", "LimitSection", "LunMapping", "MAX_ALIAS_BYTES", "MappedLunConfig",
    "MAX_BLOCKS_PER_PHYSICAL_BLOCK", "MAX_CHAP_NAME_BYTES", "MAX_CHAP_SECRET_BYTES",
    "MAX_INACTIVITY_TIMEOUT", "MAX_ISCSI_NAME_BYTES", "MAX_LUN", "MAX_PORT", "MAX_RANGE_DESCRIPTORS",
    "MAX_SERIAL_CHARS", "MAX_TPGT", "MAX_WRITE_USING_TOKEN_BUDGET", "MIN_CHAP_SECRET_BYTES", "MetricsConfig",
    "NAA6_WWN", "NAA_NAME", "ODX_INTEGER_KEYS", "ODX_SECTION", "ODX_SIZE_GRANULE", "ODX_SIZE_KEYS",
    "OdxConfig", "PortalConfig", "RBD_NAME", "RbdConfig", "SCHEMA_VERSION", "SERIAL", "SIZE_SUFFIXES", "SIZE_TEXT",
    "STORAGE_NAME", "SUPPORTED_FRONTENDS", "StorageObjectConfig", "TargetConfig", "demo_config_dict",
    "dump_config", "format_size", "iscsi_name_problem", "load_config", "log", "parse_config",
    "parse_size", "port_group_of", "resolve_extent_length", "save_config",
]
