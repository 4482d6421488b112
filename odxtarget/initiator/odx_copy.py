"""``odxtarget copy``: an initiator that copies (or zeroes) block ranges by ODX, the way Windows does.

The sequence per source token (SBC-4 4.28, reference sections 2, 3, 5 and 10):

1. INQUIRY VPD 8Fh on both LUs: the Block Device ROD Token Limits descriptor (SBC-4 6.6.9.3)
   gives MAXIMUM RANGE DESCRIPTORS, MAXIMUM TOKEN TRANSFER SIZE and OPTIMAL TRANSFER COUNT.
2. READ CAPACITY(16) of both: block sizes must match, ranges must fit.
3. POPULATE TOKEN (SBC-4 5.12) for at most MAXIMUM TOKEN TRANSFER SIZE blocks, then RECEIVE ROD
   TOKEN INFORMATION (SBC-4 5.25) on the same I_T nexus to fetch the 512-byte token.
4. WRITE USING TOKEN (SBC-4 5.59) in chunks of the destination's OPTIMAL TRANSFER COUNT. A chunk
   that ends in COPY ABORTED 0Dh/04h wrote only INFORMATION blocks (SBC-4 4.28.2); the next
   chunk continues from there, as Windows does.

A target without ODX (no VPD 8Fh, or ILLEGAL REQUEST on PT/WUT) gets plain READ(16)/WRITE(16)
of 1 MiB unless the caller forbids the fallback. ``zero`` writes the block device zero ROD
token (FFFF0001h, SBC-4 4.28.4), which needs no POPULATE TOKEN.
"""

from __future__ import annotations

import itertools
import struct
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from odxtarget.copy.constants import ROD_TOKEN_SIZE, CopyInAction, CopyOutAction
from odxtarget.copy.params import build_populate_token_list, build_write_using_token_list
from odxtarget.copy.token import make_zero_token
from odxtarget.initiator import libiscsi, sg_io
from odxtarget.initiator.progress import NoProgress, ProgressDisplay
from odxtarget.scsi.sense import SenseData

DEFAULT_ISCSI_PORT = 3260
COPY_INITIATOR_NAME = "iqn.2026-11.org.odxtarget:copy"
FALLBACK_CHUNK_BYTES = 1024 * 1024
RRTI_ALLOCATION_LENGTH = 1024          # what ddpt allocates; room for 255 bytes of sense + token
VPD_ALLOCATION_LENGTH = 1024
VPD_THIRD_PARTY_COPY = 0x8F
VPD_PAGE_HEADER_SIZE = 4
BDRL_DESCRIPTOR_TYPE = 0x0000          # Block Device ROD Token Limits
MAX_BLOCKS_PER_RANGE = 0xFFFF_FFFF     # NUMBER OF LOGICAL BLOCKS is 32 bits (SBC-4 5.12.3)
LIST_ID_MODULUS = 1 << 32
LIST_ID_RETRIES = 10                   # like ddpt: next id on OPERATION IN PROGRESS
MAX_STALLED_WRITES = 3                 # WUTs in a row that wrote nothing before giving up

SENSE_UNIT_ATTENTION = 0x06
SENSE_ILLEGAL_REQUEST = 0x05
MAX_UNIT_ATTENTIONS = 8
SENSE_COPY_ABORTED = 0x0A
ASC_COPY_TARGET_UNDERRUN = (0x0D, 0x04)
ASC_OPERATION_IN_PROGRESS = (0x00, 0x16)

RRTI_HEADER_SIZE = 32
RRTI_STATUS_OFFSET = 5
RRTI_SENSE_FIELD_LENGTH_OFFSET = 13
RRTI_TRANSFER_COUNT_OFFSET = 16
ROD_TOKEN_DESCRIPTORS_LENGTH_SIZE = 4
ROD_TOKEN_RESTRICTED_SIZE = 2          # the two bytes in front of the token (SBC-4 5.25)

METHOD_ODX = "odx"
METHOD_FALLBACK = "fallback"
METHOD_MIXED = "odx+fallback"


class CopyError(Exception):
    """A copy that cannot go on; the message is one line for the operator."""


class UrlError(CopyError):
    pass


class CopyFailed(CopyError):
    """A copy that failed part way; ``summary`` says how far it got."""

    def __init__(self, reason: str, summary: CopySummary) -> None:
        super().__init__(reason)
        self.summary = summary


class CopyInterrupted(Exception):
    """The user interrupted the copy (SIGINT, KeyboardInterrupt); ``summary`` says how far it got."""

    def __init__(self, summary: CopySummary) -> None:
        super().__init__("interrupted")
        self.summary = summary


class OdxRefused(Exception):
    """The target does not do ODX for this request; a plain copy may still work."""


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IscsiUrl:
    """iscsi://[user[%password]@]host[:port]/<iqn>/<lun>[?lba=N&blocks=M] (libiscsi's form plus a range)."""

    host: str
    port: int
    iqn: str
    lun: int
    user: str | None = None
    password: str | None = None
    lba: int = 0
    blocks: int | None = None        # None: to the end of the LU (or the other side's count)
    #: Mutual CHAP: the name and secret the target must answer with (RFC 7143 12.1.3).
    target_user: str | None = None
    target_password: str | None = None

    @property
    def target_key(self) -> tuple[object, ...]:
        return (self.host, self.port, self.iqn, self.user, self.password, self.target_user, self.target_password)


def _non_negative(text: str, what: str, url: str) -> int:
    if not text.isdigit():
        raise UrlError(f"{url}: {what} must be a non-negative integer, not {text!r}")
    return int(text)


def parse_iscsi_url(url: str) -> IscsiUrl:
    """Parse one SRC/DST argument; raise :class:`UrlError` naming what is wrong."""
    if not url.startswith("iscsi://"):
        raise UrlError(f"{url}: not an iscsi:// URL (iscsi://[user[%password]@]host[:port]/IQN/LUN)")
    rest = url[len("iscsi://"):]
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    if not slash:
        raise UrlError(f"{url}: missing /IQN/LUN after the host")
    user = password = None
    if "@" in authority:
        credentials, _, authority = authority.rpartition("@")
        user, percent, secret = credentials.partition("%")
        password = secret if percent else None
        if not user:
            raise UrlError(f"{url}: empty user name before '@'")
    if authority.startswith("["):
        host, bracket, port_part = authority[1:].partition("]")
        if not bracket or (port_part and not port_part.startswith(":")):
            raise UrlError(f"{url}: malformed [IPv6] host")
        port_text = port_part[1:]
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise UrlError(f"{url}: missing host")
    port = DEFAULT_ISCSI_PORT
    if port_text:
        port = _non_negative(port_text, "port", url)
        if not 0 < port < 65536:
            raise UrlError(f"{url}: port {port} out of range")
    iqn, slash, lun_text = path.rpartition("/")
    if not slash or not iqn or "/" in iqn:
        raise UrlError(f"{url}: path must be /IQN/LUN")
    lun = _non_negative(lun_text, "LUN", url)
    lba, blocks = 0, None
    if query:
        for key, values in urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
            if key not in ("lba", "blocks") or len(values) != 1:
                raise UrlError(f"{url}: unknown or repeated query parameter {key!r} (use lba=N&blocks=M)")
            value = _non_negative(values[0], key, url)
            if key == "lba":
                lba = value
            else:
                if value == 0:
                    raise UrlError(f"{url}: blocks must be at least 1")
                blocks = value
    return IscsiUrl(host, port, iqn, lun, user, password, lba, blocks)


def parse_copy_url(argument: str) -> IscsiUrl | sg_io.DeviceUrl:
    """An iscsi:// URL (libiscsi does the I/O) or a /dev/sgN, /dev/sdX path (SG_IO), either
    with an optional ?lba=N&blocks=M range."""
    if sg_io.is_device_path(argument):
        try:
            return sg_io.parse_device_url(argument)
        except sg_io.SgIoError as error:
            raise UrlError(str(error)) from None
    return parse_iscsi_url(argument)


# --------------------------------------------------------------------------------------------
# progress and results
# --------------------------------------------------------------------------------------------

@dataclass(slots=True)
class CopySummary:
    """What a copy did: bytes written to the destination, by which method, in how long."""

    bytes: int
    seconds: float
    method: str
    total_bytes: int = 0
    odx_bytes: int = 0
    fallback_bytes: int = 0
    populate_tokens: int = 0             # POPULATE TOKEN commands that returned a token
    write_using_tokens: int = 0          # WRITE USING TOKEN commands sent
    truncated_writes: int = 0            # WUTs that wrote less than asked (SBC-4 4.28.2)

    def line(self) -> str:
        rate = self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0
        return f"{self.bytes} bytes in {self.seconds:.2f} s ({rate:.1f} MB/s), method: {self.method}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


#: Builds the progress display once the copy's size is known.
ProgressFactory = Callable[[int], ProgressDisplay]


def no_progress(total_bytes: int) -> ProgressDisplay:
    return NoProgress()


# --------------------------------------------------------------------------------------------
# SCSI helpers
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TokenLimits:
    """Block Device ROD Token Limits descriptor (SBC-4 6.6.9.3); block counts, 0 = not reported."""

    max_range_descriptors: int
    max_token_transfer_blocks: int
    optimal_transfer_blocks: int


def parse_token_limits(page: bytes) -> TokenLimits | None:
    """Find the BDRL descriptor in a Third-party Copy VPD page (SPC-4 7.8.17); None if absent."""
    if len(page) < VPD_PAGE_HEADER_SIZE or page[1] != VPD_THIRD_PARTY_COPY:
        return None
    end = min(len(page), VPD_PAGE_HEADER_SIZE + struct.unpack_from(">H", page, 2)[0])
    offset = VPD_PAGE_HEADER_SIZE
    while offset + 4 <= end:
        kind, length = struct.unpack_from(">HH", page, offset)
        if kind == BDRL_DESCRIPTOR_TYPE and offset + 36 <= end:
            ranges = struct.unpack_from(">H", page, offset + 10)[0]
            mtts, otc = struct.unpack_from(">QQ", page, offset + 20)
            return TokenLimits(ranges, mtts, otc)
        offset += 4 + length
    return None


def _information(sense: bytes) -> int:
    """The sense INFORMATION field (blocks written by a truncated WUT), 0 when absent."""
    parsed = SenseData.parse(sense)
    if parsed is None or parsed.information is None:
        return 0
    return parsed.information


def _third_party_copy_cdb(opcode: int, action: int, list_id: int, length: int) -> bytes:
    """83h (PT/WUT: LIST IDENTIFIER at 6) and 84h/07h (RRTI: at 2) CDBs (reference section 2)."""
    if opcode == 0x83:
        return struct.pack(">BB4xIIBB", opcode, action, list_id, length, 0, 0)
    return struct.pack(">BBI4xIBB", opcode, action, list_id, length, 0, 0)


class ListIds:
    """32-bit list identifiers from one counter, as Windows draws them (SPC-4 5.16.2)."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)

    def next(self) -> int:
        return next(self._counter) % LIST_ID_MODULUS


@dataclass(slots=True)
class Endpoint:
    """One side of a copy: a session, a LUN, its geometry and its ODX limits."""

    url: IscsiUrl | sg_io.DeviceUrl
    session: libiscsi.IscsiSession | sg_io.SgIoSession
    block_count: int = 0
    block_size: int = 0
    limits: TokenLimits | None = None

    def describe(self) -> str:
        if isinstance(self.url, sg_io.DeviceUrl):
            return self.url.describe()
        return f"{self.url.host}:{self.url.port}/{self.url.iqn}/{self.url.lun}"


class Sessions:
    """Opens one session per distinct target, so a copy inside one target shares its I_T nexus."""

    def __init__(self, initiator_name: str) -> None:
        self.initiator_name = initiator_name
        self._open: dict[tuple[object, ...], libiscsi.IscsiSession | sg_io.SgIoSession] = {}

    def endpoint(self, url: IscsiUrl | sg_io.DeviceUrl) -> Endpoint:
        session = self._open.get(url.target_key)
        if session is None:
            try:
                if isinstance(url, sg_io.DeviceUrl):
                    session = sg_io.SgIoSession(url.path)
                else:
                    chap = (url.user, url.password or "") if url.user is not None else None
                    mutual = ((url.target_user, url.target_password or "")
                              if chap is not None and url.target_user is not None else None)
                    session = libiscsi.connect(url.host, url.port, url.iqn, url.lun,
                                               initiator_name=self.initiator_name, chap=chap, mutual_chap=mutual)
            except libiscsi.LibiscsiError as error:
                raise CopyError(str(error)) from None
            self._open[url.target_key] = session
        endpoint = Endpoint(url, session)
        try:
            _clear_unit_attentions(session, url.lun)
            endpoint.block_count, endpoint.block_size = session.read_capacity(url.lun)
        except libiscsi.LibiscsiError as error:
            raise CopyError(f"{endpoint.describe()}: {error}") from None
        return endpoint

    def close(self) -> None:
        for session in self._open.values():
            session.close()
        self._open.clear()


def _clear_unit_attentions(session: libiscsi.IscsiSession, lun: int) -> None:
    """Login clears unit attentions only on the login LUN; TEST UNIT READY takes the rest
    (each one reports and clears one pending condition, SAM-5 5.14)."""
    for _ in range(MAX_UNIT_ATTENTIONS):
        result = session.test_unit_ready(lun)
        if result.sense_key != SENSE_UNIT_ATTENTION or result.status != libiscsi.STATUS_CHECK_CONDITION:
            return


def read_token_limits(endpoint: Endpoint) -> TokenLimits | None:
    result = endpoint.session.inquiry(endpoint.url.lun, VPD_THIRD_PARTY_COPY, VPD_ALLOCATION_LENGTH)
    if not result.good:
        return None
    return parse_token_limits(result.data)


def _resolve_count(source: Endpoint | None, destination: Endpoint) -> int:
    """The number of blocks to copy: the one explicit count, else the source's remaining blocks."""
    counts = [url.blocks for url in (source.url if source else None, destination.url) if url and url.blocks]
    if len(counts) == 2 and counts[0] != counts[1]:
        raise CopyError(f"source and destination ranges differ in length ({counts[0]} vs {counts[1]} blocks)")
    if counts:
        count = counts[0]
    elif source is not None:
        count = source.block_count - source.url.lba
    else:
        count = destination.block_count - destination.url.lba
    for side in (source, destination):
        if side is None:
            continue
        if side.url.lba + count > side.block_count or count <= 0:
            raise CopyError(f"{side.describe()}: range lba={side.url.lba} blocks={count} is beyond the"
                            f" capacity of {side.block_count} blocks")
    return count


# --------------------------------------------------------------------------------------------
# the copier
# --------------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Copy:
    """State of one copy or zeroing run: how far the destination is written, and by which method."""

    destination: Endpoint
    source: Endpoint | None
    count: int
    list_ids: ListIds
    progress: ProgressDisplay
    done: int = 0
    odx_blocks: int = 0
    fallback_blocks: int = 0
    populate_tokens: int = 0
    write_using_tokens: int = 0
    truncated_writes: int = 0
    #: The third-party copy command being sent (endpoint, list id), for COPY OPERATION ABORT.
    in_flight: tuple[Endpoint, int] | None = None
    _stalled: int = field(default=0)

    @property
    def block_size(self) -> int:
        return self.destination.block_size

    def advance(self, blocks: int, *, odx: bool) -> None:
        self.done += blocks
        if odx:
            self.odx_blocks += blocks
        else:
            self.fallback_blocks += blocks
        self.progress.update(self.done * self.block_size)

    # -- ODX --------------------------------------------------------------------------------

    def _third_party_copy_out(self, endpoint: Endpoint, action: int, build: Callable[[], bytes],
                              what: str) -> tuple[int, libiscsi.Result]:
        """Send PT or WUT with a fresh list id, retrying on OPERATION IN PROGRESS (SPC-4 5.16.2)."""
        parameters = build()
        for _ in range(LIST_ID_RETRIES):
            list_id = self.list_ids.next()
            cdb = _third_party_copy_cdb(0x83, action, list_id, len(parameters))
            self.in_flight = (endpoint, list_id)
            result = endpoint.session.scsi_command(endpoint.url.lun, cdb, data_out=parameters)
            self.in_flight = None
            if not result.acknowledged:
                raise CopyError(f"{endpoint.describe()}: connection lost during {what}")
            if (result.status == libiscsi.STATUS_CHECK_CONDITION
                    and (result.asc, result.ascq) == ASC_OPERATION_IN_PROGRESS):
                continue
            return list_id, result
        raise CopyError(f"{endpoint.describe()}: {what}: list identifiers kept colliding")

    def abort_in_flight(self) -> None:
        """COPY OPERATION ABORT (SPC-4 6.3) for the PT or WUT whose answer did not arrive
        (the user interrupted the wait): the target stops it and discards what it has not
        written. Best effort: the session may already be unusable."""
        if self.in_flight is None:
            return
        endpoint, list_id = self.in_flight
        self.in_flight = None
        cdb = struct.pack(">BBI10x", 0x83, CopyOutAction.COPY_OPERATION_ABORT, list_id)
        try:
            endpoint.session.scsi_command(endpoint.url.lun, cdb)
        except libiscsi.LibiscsiError:
            pass

    def _receive_rod_token_information(self, endpoint: Endpoint, list_id: int) -> bytes:
        cdb = _third_party_copy_cdb(0x84, CopyInAction.RECEIVE_ROD_TOKEN_INFORMATION, list_id,
                                    RRTI_ALLOCATION_LENGTH)
        result = endpoint.session.scsi_command(endpoint.url.lun, cdb, data_in_len=RRTI_ALLOCATION_LENGTH)
        if not result.good:
            raise OdxRefused(f"RECEIVE ROD TOKEN INFORMATION: {result.describe()}")
        if len(result.data) < RRTI_HEADER_SIZE:
            raise CopyError(f"{endpoint.describe()}: RRTI response of {len(result.data)} bytes")
        return result.data

    @staticmethod
    def _transfer_count(response: bytes) -> int:
        return struct.unpack_from(">Q", response, RRTI_TRANSFER_COUNT_OFFSET)[0]

    def populate_token(self, first_lba: int, blocks: int) -> tuple[bytes, int]:
        """PT + RRTI for ``blocks`` source blocks; returns (token, blocks it represents)."""
        source = self.source
        assert source is not None and source.limits is not None
        ranges = []
        lba, left = first_lba, blocks
        while left:
            piece = min(left, MAX_BLOCKS_PER_RANGE)
            ranges.append((lba, piece))
            lba, left = lba + piece, left - piece
        list_id, result = self._third_party_copy_out(
            source, CopyOutAction.POPULATE_TOKEN, lambda: build_populate_token_list(ranges), "POPULATE TOKEN")
        if result.status == libiscsi.STATUS_CHECK_CONDITION and result.sense_key == SENSE_ILLEGAL_REQUEST:
            raise OdxRefused(f"POPULATE TOKEN: {result.describe()}")
        if not result.good and not (result.sense_key == SENSE_COPY_ABORTED
                                    and (result.asc, result.ascq) == ASC_COPY_TARGET_UNDERRUN):
            raise CopyError(f"{source.describe()}: POPULATE TOKEN: {result.describe()}")
        response = self._receive_rod_token_information(source, list_id)
        represented = min(self._transfer_count(response), blocks)
        sense_field = response[RRTI_SENSE_FIELD_LENGTH_OFFSET]
        descriptors_at = RRTI_HEADER_SIZE + sense_field
        token_at = descriptors_at + ROD_TOKEN_DESCRIPTORS_LENGTH_SIZE + ROD_TOKEN_RESTRICTED_SIZE
        if len(response) < token_at + ROD_TOKEN_SIZE or represented == 0:
            raise OdxRefused("RECEIVE ROD TOKEN INFORMATION returned no token")
        descriptors_length = struct.unpack_from(">I", response, descriptors_at)[0]
        if descriptors_length < ROD_TOKEN_SIZE + ROD_TOKEN_RESTRICTED_SIZE:
            raise OdxRefused("RECEIVE ROD TOKEN INFORMATION returned no token")
        self.populate_tokens += 1
        return response[token_at:token_at + ROD_TOKEN_SIZE], represented

    def write_using_token(self, token: bytes, offset_into_rod: int, blocks: int) -> int:
        """One WUT of ``blocks`` at the current position; returns the blocks actually written."""
        destination = self.destination
        lba = destination.url.lba + self.done
        list_id, result = self._third_party_copy_out(
            destination, CopyOutAction.WRITE_USING_TOKEN,
            lambda: build_write_using_token_list(token, [(lba, blocks)], offset_into_rod=offset_into_rod),
            "WRITE USING TOKEN")
        self.write_using_tokens += 1
        if result.good:
            return blocks
        if (result.status == libiscsi.STATUS_CHECK_CONDITION
                and (result.asc, result.ascq) == ASC_COPY_TARGET_UNDERRUN
                and result.sense_key == SENSE_COPY_ABORTED):
            # Truncated, not failed (SBC-4 4.28.2): INFORMATION says how many blocks were
            # written; when it is absent or 0, ask RRTI (the Windows rule, reference 5.4).
            written = _information(result.sense_raw)
            if written == 0:
                written = self._transfer_count(self._receive_rod_token_information(destination, list_id))
            self.truncated_writes += 1
            return min(written, blocks)
        if result.status == libiscsi.STATUS_CHECK_CONDITION and result.sense_key == SENSE_ILLEGAL_REQUEST:
            raise OdxRefused(f"WRITE USING TOKEN: {result.describe()}")
        raise CopyError(f"{destination.describe()}: WRITE USING TOKEN: {result.describe()}")

    def _wut_chunk(self) -> int:
        limits = self.destination.limits
        assert limits is not None
        return limits.optimal_transfer_blocks or limits.max_token_transfer_blocks or self.count

    def _written(self, blocks: int) -> None:
        if blocks == 0:
            self._stalled += 1
            if self._stalled >= MAX_STALLED_WRITES:
                raise CopyError(f"{self.destination.describe()}: WRITE USING TOKEN keeps writing nothing")
        else:
            self._stalled = 0
        self.advance(blocks, odx=True)

    def run_odx_copy(self) -> None:
        source = self.source
        assert source is not None and source.limits is not None
        per_token = source.limits.max_token_transfer_blocks or self.count
        if source.limits.max_range_descriptors:
            per_token = min(per_token, source.limits.max_range_descriptors * MAX_BLOCKS_PER_RANGE)
        while self.done < self.count:
            token_start = self.done
            token, represented = self.populate_token(source.url.lba + token_start,
                                                     min(per_token, self.count - token_start))
            while self.done < token_start + represented:
                chunk = min(self._wut_chunk(), token_start + represented - self.done)
                self._written(self.write_using_token(token, self.done - token_start, chunk))

    def run_odx_zero(self) -> None:
        token = make_zero_token()
        while self.done < self.count:
            chunk = min(self._wut_chunk(), self.count - self.done)
            self._written(self.write_using_token(token, 0, chunk))

    # -- fallback ---------------------------------------------------------------------------

    def run_fallback(self) -> None:
        """READ(16)/WRITE(16) of 1 MiB from the current position to the end."""
        destination = self.destination
        chunk_blocks = max(1, FALLBACK_CHUNK_BYTES // self.block_size)
        zeros = bytes(chunk_blocks * self.block_size) if self.source is None else b""
        while self.done < self.count:
            blocks = min(chunk_blocks, self.count - self.done)
            if self.source is None:
                data = zeros[:blocks * self.block_size]
            else:
                read = self.source.session.scsi_command(
                    self.source.url.lun,
                    struct.pack(">BBQIBB", 0x88, 0, self.source.url.lba + self.done, blocks, 0, 0),
                    data_in_len=blocks * self.block_size)
                if not read.good or len(read.data) != blocks * self.block_size:
                    raise CopyError(f"{self.source.describe()}: READ(16): {read.describe()}")
                data = read.data
            written = destination.session.write(destination.url.lun, destination.url.lba + self.done,
                                                data, self.block_size)
            if not written.good:
                raise CopyError(f"{destination.describe()}: WRITE(16): {written.describe()}")
            self.advance(blocks, odx=False)

    def method(self) -> str:
        if self.fallback_blocks == 0:
            return METHOD_ODX
        return METHOD_MIXED if self.odx_blocks else METHOD_FALLBACK

    def summary(self, seconds: float) -> CopySummary:
        size = self.block_size
        return CopySummary(self.done * size, seconds, self.method(), self.count * size, self.odx_blocks * size,
                           self.fallback_blocks * size, self.populate_tokens, self.write_using_tokens,
                           self.truncated_writes)


def _run(copy: _Copy, odx: Callable[[], None], odx_possible: bool, allow_fallback: bool,
         why_not: str) -> CopySummary:
    """Run the copy; a failure ends in ``CopyFailed``, Ctrl-C in ``CopyInterrupted``, each
    with how far it got."""
    started = time.monotonic()
    try:
        if odx_possible:
            try:
                odx()
            except OdxRefused as refusal:
                if not allow_fallback:
                    raise CopyError(f"the target refused ODX ({refusal}) and --no-fallback is set") from None
                copy.run_fallback()
        elif allow_fallback:
            copy.run_fallback()
        else:
            raise CopyError(f"{why_not} and --no-fallback is set")
    except KeyboardInterrupt:
        copy.abort_in_flight()
        raise CopyInterrupted(copy.summary(time.monotonic() - started)) from None
    except (CopyError, libiscsi.LibiscsiError) as error:
        raise CopyFailed(str(error), copy.summary(time.monotonic() - started)) from None
    copy.progress.finish(copy.done * copy.block_size)
    return copy.summary(time.monotonic() - started)


def copy_range(source_url: IscsiUrl | sg_io.DeviceUrl, destination_url: IscsiUrl | sg_io.DeviceUrl, *,
               allow_fallback: bool = True, progress: ProgressFactory = no_progress,
               initiator_name: str = COPY_INITIATOR_NAME, offload: bool = True) -> CopySummary:
    """Copy the source range onto the destination range, by ODX when both ends offer it
    (and ``offload``: False copies by READ/WRITE only, e.g. to compare the two).

    Raises:
        CopyError: nothing was copied (a bad URL, a refused login, ranges that do not fit), or
            ``CopyFailed``: the copy failed part way, and says how far it got.
        CopyInterrupted: Ctrl-C (SIGINT) during the copy; it says how far it got.
    """
    sessions = Sessions(initiator_name)
    try:
        source = sessions.endpoint(source_url)
        destination = sessions.endpoint(destination_url)
        if source.block_size != destination.block_size:
            raise CopyError(f"block sizes differ: source {source.block_size}, destination {destination.block_size}")
        count = _resolve_count(source, destination)
        if (source.url.target_key == destination.url.target_key and source.url.lun == destination.url.lun
                and source.url.lba < destination.url.lba + count and destination.url.lba < source.url.lba + count):
            raise CopyError("source and destination ranges overlap on the same LUN")
        source.limits = read_token_limits(source)
        destination.limits = read_token_limits(destination)
        missing = [side.describe() for side in (source, destination) if side.limits is None]
        copy = _Copy(destination, source, count, ListIds(), progress(count * destination.block_size))
        return _run(copy, copy.run_odx_copy, offload and not missing, allow_fallback,
                    f"no ODX (Third-party Copy VPD page 8Fh) on {', '.join(missing)}")
    finally:
        sessions.close()


def zero_range(destination_url: IscsiUrl | sg_io.DeviceUrl, *, allow_fallback: bool = True,
               progress: ProgressFactory = no_progress,
               initiator_name: str = COPY_INITIATOR_NAME, offload: bool = True) -> CopySummary:
    """Zero the destination range with the block device zero ROD token (SBC-4 4.28.4), or by
    writing zeros when the target has no ODX or ``offload`` is False. Raises as ``copy_range``."""
    sessions = Sessions(initiator_name)
    try:
        destination = sessions.endpoint(destination_url)
        count = _resolve_count(None, destination)
        destination.limits = read_token_limits(destination)
        copy = _Copy(destination, None, count, ListIds(), progress(count * destination.block_size))
        return _run(copy, copy.run_odx_zero, offload and destination.limits is not None, allow_fallback,
                    f"no ODX (Third-party Copy VPD page 8Fh) on {destination.describe()}")
    finally:
        sessions.close()
