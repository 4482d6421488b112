"""A small ctypes binding to libiscsi.so.7 (Debian's libiscsi7 1.19.0): the initiator behind
``odxtarget copy`` and the one the tests drive.

Why ctypes and not a C extension: odxtarget and its test suite must run on a machine without a
compiler.
The one struct we read field by field, ``struct scsi_task`` from include/scsi-lowlevel.h, is
declared here by hand; tests/conformance/test_harness_libiscsi.py checks the layout against the
installed header with a tiny C program whenever a header and a compiler are present.

Only the synchronous API is used: one command at a time per :class:`IscsiSession`. libiscsi's
blocking calls release the GIL (ctypes does that for every foreign call), so another thread may
kill the target while a command is in flight; with auto-reconnect disabled the command then comes
back with :data:`STATUS_CANCELLED` instead of hanging.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from dataclasses import dataclass
from enum import IntEnum

LIBRARY_SONAME = "libiscsi.so.7"
DEFAULT_INITIATOR = "iqn.2026-11.org.odxtarget:test-initiator"

# libiscsi's SCSI status values: the SAM ones plus three of its own for transport outcomes
# (include/iscsi.h, enum scsi_status).
STATUS_GOOD = 0x00
STATUS_CHECK_CONDITION = 0x02
STATUS_CONDITION_MET = 0x04
STATUS_BUSY = 0x08
STATUS_RESERVATION_CONFLICT = 0x18
STATUS_TASK_SET_FULL = 0x28
STATUS_CANCELLED = 0x0F000000   # connection dropped / command cancelled: never acknowledged
STATUS_ERROR = 0x0F000001
STATUS_TIMEOUT = 0x0F000002

SCSI_CDB_MAX_SIZE = 16          # include/scsi-lowlevel.h


class XferDir(IntEnum):
    """enum scsi_xfer_dir."""

    NONE = 0
    READ = 1
    WRITE = 2


class HeaderDigest(IntEnum):
    """enum iscsi_header_digest: what the initiator offers in HeaderDigest (RFC 7143 13.1)."""

    NONE = 0
    NONE_CRC32C = 1
    CRC32C_NONE = 2
    CRC32C = 3


class SessionType(IntEnum):
    """enum iscsi_session_type."""

    DISCOVERY = 1
    NORMAL = 2


class ResidualStatus(IntEnum):
    """enum scsi_residual: the U/O flags of the SCSI Response PDU (RFC 7143 11.4.5)."""

    NO_RESIDUAL = 0
    UNDERFLOW = 1
    OVERFLOW = 2


# --------------------------------------------------------------------------------------------
# struct layouts (x86_64 / LP64; verified against the 1.19.0 header, see module docstring)
# --------------------------------------------------------------------------------------------

class _ScsiSense(ctypes.Structure):
    """struct scsi_sense. The three 1-bit fields (sense_specific, ill_param_in_cdb,
    bit_pointer_valid) share one byte with GCC, and bit_pointer follows in the next byte of the
    same 4-byte unit; ctypes bit-fields would not pack that way, so the byte is declared whole."""

    _fields_ = [
        ("error_type", ctypes.c_ubyte),
        ("key", ctypes.c_int),
        ("ascq", ctypes.c_int),          # ASC << 8 | ASCQ
        ("flag_bits", ctypes.c_ubyte),   # bit 0 sense_specific, bit 1 ill_param_in_cdb, bit 2 bit_pointer_valid
        ("bit_pointer", ctypes.c_ubyte),
        ("field_pointer", ctypes.c_uint16),
    ]


class _ScsiData(ctypes.Structure):
    _fields_ = [("size", ctypes.c_int), ("data", ctypes.POINTER(ctypes.c_ubyte))]


class _ScsiIovector(ctypes.Structure):
    _fields_ = [
        ("iov", ctypes.c_void_p),
        ("niov", ctypes.c_int),
        ("nalloc", ctypes.c_int),
        ("offset", ctypes.c_size_t),
        ("consumed", ctypes.c_int),
    ]


class ScsiTask(ctypes.Structure):
    """struct scsi_task (include/scsi-lowlevel.h, libiscsi 1.19.0)."""

    _fields_ = [
        ("status", ctypes.c_int),
        ("cdb_size", ctypes.c_int),
        ("xfer_dir", ctypes.c_int),
        ("expxferlen", ctypes.c_int),
        ("cdb", ctypes.c_ubyte * SCSI_CDB_MAX_SIZE),
        ("residual_status", ctypes.c_int),
        ("residual", ctypes.c_size_t),
        ("sense", _ScsiSense),
        ("datain", _ScsiData),
        ("mem", ctypes.c_void_p),
        ("ptr", ctypes.c_void_p),
        ("itt", ctypes.c_uint32),
        ("cmdsn", ctypes.c_uint32),
        ("lun", ctypes.c_uint32),
        ("iovector_in", _ScsiIovector),
        ("iovector_out", _ScsiIovector),
    ]


class _IscsiData(ctypes.Structure):
    """struct iscsi_data: the data-out buffer handed to iscsi_scsi_command_sync."""

    _fields_ = [("size", ctypes.c_size_t), ("data", ctypes.c_void_p)]


# The layout the rest of this module relies on; the header check compares against these numbers.
EXPECTED_LAYOUT: dict[str, int] = {
    "sizeof": 176,
    "status": 0, "cdb_size": 4, "xfer_dir": 8, "expxferlen": 12, "cdb": 16,
    "residual_status": 32, "residual": 40, "sense": 48,
    "sense.error_type": 48, "sense.key": 52, "sense.ascq": 56,
    "sense.bit_pointer": 61, "sense.field_pointer": 62,
    "datain": 64, "datain.size": 64, "datain.data": 72,
    "mem": 80, "ptr": 88, "itt": 96, "cmdsn": 100, "lun": 104,
    "iovector_in": 112, "iovector_out": 144,
}


def ctypes_layout() -> dict[str, int]:
    """The offsets this binding's ctypes declarations produce, keyed like EXPECTED_LAYOUT."""
    sense_base = ScsiTask.sense.offset
    datain_base = ScsiTask.datain.offset
    layout = {"sizeof": ctypes.sizeof(ScsiTask)}
    for name, _ in ScsiTask._fields_:
        layout[name] = getattr(ScsiTask, name).offset
    for name in ("error_type", "key", "ascq", "bit_pointer", "field_pointer"):
        layout[f"sense.{name}"] = sense_base + getattr(_ScsiSense, name).offset
    for name in ("size", "data"):
        layout[f"datain.{name}"] = datain_base + getattr(_ScsiData, name).offset
    return {key: layout[key] for key in EXPECTED_LAYOUT}


# --------------------------------------------------------------------------------------------
# library loading
# --------------------------------------------------------------------------------------------

class LibiscsiError(Exception):
    """A libiscsi call failed; the message carries iscsi_get_error()'s text."""


class LoginError(LibiscsiError):
    """Connect or login (including CHAP) failed."""


class ConnectionLostError(LibiscsiError):
    """The command never completed: the connection dropped or the command timed out."""


_lib: ctypes.CDLL | None = None


def load_library() -> ctypes.CDLL:
    """Load libiscsi.so.7 once and declare the prototypes we call."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL(LIBRARY_SONAME)
    except OSError as exc:  # pragma: no cover - depends on the machine
        raise LibiscsiError(
            f"cannot load {LIBRARY_SONAME} ({exc}); install Debian's libiscsi7 (make setup)"
        ) from exc
    ctx = ctypes.c_void_p
    task_p = ctypes.POINTER(ScsiTask)
    prototypes: dict[str, tuple[object, list[object]]] = {
        "iscsi_create_context": (ctx, [ctypes.c_char_p]),
        "iscsi_destroy_context": (ctypes.c_int, [ctx]),
        "iscsi_get_error": (ctypes.c_char_p, [ctx]),
        "iscsi_set_targetname": (ctypes.c_int, [ctx, ctypes.c_char_p]),
        "iscsi_set_session_type": (ctypes.c_int, [ctx, ctypes.c_int]),
        "iscsi_set_header_digest": (ctypes.c_int, [ctx, ctypes.c_int]),
        "iscsi_set_initiator_username_pwd": (ctypes.c_int, [ctx, ctypes.c_char_p, ctypes.c_char_p]),
        "iscsi_set_target_username_pwd": (ctypes.c_int, [ctx, ctypes.c_char_p, ctypes.c_char_p]),
        "iscsi_set_noautoreconnect": (None, [ctx, ctypes.c_int]),
        "iscsi_set_timeout": (ctypes.c_int, [ctx, ctypes.c_int]),
        "iscsi_full_connect_sync": (ctypes.c_int, [ctx, ctypes.c_char_p, ctypes.c_int]),
        "iscsi_is_logged_in": (ctypes.c_int, [ctx]),
        "iscsi_logout_sync": (ctypes.c_int, [ctx]),
        "iscsi_disconnect": (ctypes.c_int, [ctx]),
        "scsi_create_task": (task_p, [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]),
        "scsi_free_scsi_task": (None, [task_p]),
        "iscsi_scsi_command_sync": (task_p, [ctx, ctypes.c_int, task_p, ctypes.POINTER(_IscsiData)]),
        "iscsi_task_mgmt_lun_reset_sync": (ctypes.c_int, [ctx, ctypes.c_uint32]),
    }
    for name, (restype, argtypes) in prototypes.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    _lib = lib
    return lib


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Result:
    """What one SCSI command returned, as the initiator saw it."""

    status: int
    data: bytes                 # data-in (empty unless status is GOOD / CONDITION MET)
    sense_raw: bytes            # sense data without the 2-byte SenseLength prefix (RFC 7143 11.4.7.2)
    sense_key: int
    asc: int
    ascq: int
    residual_status: ResidualStatus
    residual: int

    @property
    def good(self) -> bool:
        return self.status == STATUS_GOOD

    @property
    def acknowledged(self) -> bool:
        """True when the target answered (any SCSI status), False for transport failures."""
        return self.status < STATUS_CANCELLED

    def describe(self) -> str:
        if self.status == STATUS_CHECK_CONDITION:
            return f"CHECK CONDITION key={self.sense_key:#x} asc/ascq={self.asc:#04x}/{self.ascq:#04x}"
        return f"status={self.status:#x}"


class ScsiCheckError(LibiscsiError):
    """A helper expected GOOD and got something else."""

    def __init__(self, what: str, result: Result) -> None:
        super().__init__(f"{what}: {result.describe()}")
        self.result = result


# --------------------------------------------------------------------------------------------
# session
# --------------------------------------------------------------------------------------------

def portal_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ScsiCommands:
    """The commands the copy client and the tests send most, over any ``scsi_command``: both
    the iSCSI session here and ``sg_io.SgIoSession`` (the kernel's nexus) offer them."""

    #: What failed commands name as their device in error messages ("" for none).
    device_label = ""

    def scsi_command(self, lun: int, cdb: bytes, data_out: bytes | None = None,
                     data_in_len: int = 0) -> Result:
        raise NotImplementedError

    def checked(self, what: str, lun: int, cdb: bytes, data_out: bytes | None = None,
                data_in_len: int = 0) -> Result:
        result = self.scsi_command(lun, cdb, data_out, data_in_len)
        if not result.good:
            raise ScsiCheckError(f"{self.device_label}: {what}" if self.device_label else what, result)
        return result

    def test_unit_ready(self, lun: int) -> Result:
        return self.scsi_command(lun, bytes(6))

    def inquiry(self, lun: int, page: int | None = None, allocation_length: int = 255) -> Result:
        """INQUIRY (SPC-4 6.6): standard data, or the VPD page ``page`` (EVPD=1)."""
        evpd = 0 if page is None else 1
        cdb = struct.pack(">BBBHB", 0x12, evpd, page or 0, allocation_length, 0)
        return self.scsi_command(lun, cdb, data_in_len=allocation_length)

    def read_capacity(self, lun: int) -> tuple[int, int]:
        """READ CAPACITY (16) (SBC-4 5.20): returns (number of blocks, block size)."""
        allocation_length = 32
        cdb = struct.pack(">BBQIBB", 0x9E, 0x10, 0, allocation_length, 0, 0)
        result = self.checked("READ CAPACITY(16)", lun, cdb, data_in_len=allocation_length)
        if len(result.data) < 12:
            raise ScsiCheckError(f"READ CAPACITY(16) returned {len(result.data)} bytes", result)
        last_lba, block_size = struct.unpack_from(">QI", result.data)
        return last_lba + 1, block_size

    def read(self, lun: int, lba: int, blocks: int, block_size: int, *, fua: bool = False) -> Result:
        """READ (16) (SBC-4 5.16)."""
        flags = 0x08 if fua else 0
        cdb = struct.pack(">BBQIBB", 0x88, flags, lba, blocks, 0, 0)
        return self.scsi_command(lun, cdb, data_in_len=blocks * block_size)

    def write(self, lun: int, lba: int, data: bytes, block_size: int, *, fua: bool = False) -> Result:
        """WRITE (16) (SBC-4 5.40); FUA=1 asks for the data to be on stable storage before GOOD."""
        if len(data) % block_size:
            raise ValueError("data must be a whole number of blocks")
        flags = 0x08 if fua else 0
        cdb = struct.pack(">BBQIBB", 0x8A, flags, lba, len(data) // block_size, 0, 0)
        return self.scsi_command(lun, cdb, data_out=data)

    def synchronize_cache(self, lun: int, lba: int = 0, blocks: int = 0) -> Result:
        """SYNCHRONIZE CACHE (10) (SBC-4 5.24); blocks=0 means through the last LBA."""
        cdb = struct.pack(">BBIBHB", 0x35, 0, lba, 0, blocks, 0)
        return self.scsi_command(lun, cdb)


class IscsiSession(ScsiCommands):
    """One logged-in iSCSI normal session (one connection) to one target.

    Construct, then :meth:`connect`; or use :func:`connect` which does both. Close with
    :meth:`close` (logout) or :meth:`abandon` (drop the TCP connection without logout).
    """

    def __init__(
        self,
        target_iqn: str,
        *,
        initiator_name: str = DEFAULT_INITIATOR,
        header_digest: HeaderDigest = HeaderDigest.NONE,
        chap: tuple[str, str] | None = None,
        mutual_chap: tuple[str, str] | None = None,
        auto_reconnect: bool = False,
        timeout_seconds: int = 30,
    ) -> None:
        self._lib = load_library()
        self.target_iqn = target_iqn
        self._ctx = self._lib.iscsi_create_context(initiator_name.encode())
        if not self._ctx:
            raise LibiscsiError("iscsi_create_context failed")
        self._check(self._lib.iscsi_set_targetname(self._ctx, target_iqn.encode()), "set targetname")
        self._check(self._lib.iscsi_set_session_type(self._ctx, SessionType.NORMAL), "set session type")
        self._check(self._lib.iscsi_set_header_digest(self._ctx, int(header_digest)), "set header digest")
        if chap is not None:
            user, password = chap
            self._check(
                self._lib.iscsi_set_initiator_username_pwd(self._ctx, user.encode(), password.encode()),
                "set CHAP credentials",
            )
        if mutual_chap is not None:
            if chap is None:
                raise ValueError("mutual CHAP needs initiator CHAP as well (libiscsi rule)")
            user, password = mutual_chap
            self._check(
                self._lib.iscsi_set_target_username_pwd(self._ctx, user.encode(), password.encode()),
                "set mutual CHAP credentials",
            )
        self._lib.iscsi_set_noautoreconnect(self._ctx, 0 if auto_reconnect else 1)
        self._check(self._lib.iscsi_set_timeout(self._ctx, timeout_seconds), "set timeout")
        self.connected = False

    # -- plumbing ---------------------------------------------------------------------------

    def error_text(self) -> str:
        if not self._ctx:
            return "context destroyed"
        message = self._lib.iscsi_get_error(self._ctx)
        return message.decode(errors="replace") if message else "(no error text)"

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise LibiscsiError(f"{what} failed: {self.error_text()}")

    # -- lifecycle --------------------------------------------------------------------------

    def connect(self, host: str, port: int, lun: int = 0) -> IscsiSession:
        """TCP connect, login (security + operational negotiation), then TEST UNIT READY on
        ``lun`` until unit attentions are cleared (that is what iscsi_full_connect_sync does)."""
        rc = self._lib.iscsi_full_connect_sync(self._ctx, portal_address(host, port).encode(), lun)
        if rc != 0:
            raise LoginError(
                f"login to {self.target_iqn} at {host}:{port} failed: {self.error_text()}"
            )
        self.connected = True
        return self

    def close(self) -> None:
        """Log out cleanly if still logged in, then free the context. Idempotent."""
        if not self._ctx:
            return
        try:
            if self.connected and self._lib.iscsi_is_logged_in(self._ctx):
                self._lib.iscsi_logout_sync(self._ctx)
        finally:
            self._destroy()

    def abandon(self) -> None:
        """Drop the connection without logout (a session failure from the target's view)."""
        if self._ctx:
            self._lib.iscsi_disconnect(self._ctx)
            self._destroy()

    def _destroy(self) -> None:
        ctx, self._ctx = self._ctx, None
        self.connected = False
        self._lib.iscsi_destroy_context(ctx)

    def lun_reset(self, lun: int) -> int:
        """LOGICAL UNIT RESET (RFC 7143 11.5.1); 0 when the target answered FUNCTION COMPLETE."""
        return self._lib.iscsi_task_mgmt_lun_reset_sync(self._ctx, lun)

    def __enter__(self) -> IscsiSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------------------

    def scsi_command(
        self,
        lun: int,
        cdb: bytes,
        data_out: bytes | None = None,
        data_in_len: int = 0,
    ) -> Result:
        """Send one CDB and wait for its completion.

        Raises :class:`ConnectionLostError` only when libiscsi could not even queue the command;
        a connection that drops while the command is in flight comes back as a Result with
        status :data:`STATUS_CANCELLED` (``acknowledged`` is then False).
        """
        if not self._ctx:
            raise ConnectionLostError("session is closed")
        if not 6 <= len(cdb) <= SCSI_CDB_MAX_SIZE:
            raise ValueError(f"CDB must be 6..{SCSI_CDB_MAX_SIZE} bytes, got {len(cdb)}")
        if data_out is not None and data_in_len:
            raise ValueError("bidirectional commands are not supported by this binding")
        if data_out is not None:
            direction, expected_length = XferDir.WRITE, len(data_out)
        elif data_in_len:
            direction, expected_length = XferDir.READ, data_in_len
        else:
            direction, expected_length = XferDir.NONE, 0

        task = self._lib.scsi_create_task(len(cdb), bytes(cdb), int(direction), expected_length)
        if not task:
            raise LibiscsiError("scsi_create_task failed (out of memory)")
        out_buffer = None
        out_descriptor = None
        if data_out is not None:
            out_buffer = ctypes.create_string_buffer(bytes(data_out), len(data_out))
            out_descriptor = ctypes.pointer(
                _IscsiData(len(data_out), ctypes.cast(out_buffer, ctypes.c_void_p))
            )
        completed = self._lib.iscsi_scsi_command_sync(self._ctx, lun, task, out_descriptor)
        if not completed:
            # The task may still sit in libiscsi's queues: leak it rather than free memory the
            # library might touch later; it is tiny and this is an error path.
            raise ConnectionLostError(f"SCSI command could not be sent: {self.error_text()}")
        try:
            return _result_from_task(completed.contents)
        finally:
            self._lib.scsi_free_scsi_task(completed)
            del out_buffer


def _result_from_task(task: ScsiTask) -> Result:
    raw = ctypes.string_at(task.datain.data, task.datain.size) if task.datain.data and task.datain.size > 0 else b""
    if task.status == STATUS_CHECK_CONDITION:
        # libiscsi keeps the whole data segment: 2-byte SenseLength, then the sense bytes.
        (sense_length,) = struct.unpack_from(">H", raw) if len(raw) >= 2 else (0,)
        sense_raw = raw[2:2 + sense_length]
        data = b""
        sense_key = task.sense.key
        asc, ascq = task.sense.ascq >> 8, task.sense.ascq & 0xFF
    else:
        sense_raw, data = b"", raw
        sense_key = asc = ascq = 0
    return Result(
        status=task.status,
        data=data,
        sense_raw=sense_raw,
        sense_key=sense_key,
        asc=asc,
        ascq=ascq,
        residual_status=ResidualStatus(task.residual_status),
        residual=task.residual,
    )


def connect(
    host: str,
    port: int,
    target_iqn: str,
    lun: int = 0,
    **options: object,
) -> IscsiSession:
    """Create a session and log in; options are :class:`IscsiSession`'s keyword arguments."""
    session = IscsiSession(target_iqn, **options)  # type: ignore[arg-type]
    try:
        return session.connect(host, port, lun)
    except BaseException:
        session._destroy()
        raise
