"""Codecs: how items are written to bytes between processes.

:class:`MsgpackCodec` (the default) writes plain data with msgpack and carries, as msgpack
extension types:

* numpy arrays as dtype, shape and their C-order bytes (object and structured dtypes are
  refused: they would need pickle), and numpy scalars likewise; an array of 64 KiB or more (a
  video frame) is written and read around msgpack, in the very bytes msgpack would write: its
  pixels are copied once each way, where msgpack's packing and unpacking copy them three times
  more (for 640x480x3 frames, most of the CPU an edge spent on them besides Redis);
* tuples (msgpack alone would turn them into lists) and integers beyond 64 bits;
* the record types registered in :mod:`aioflow.wire` (the video ``Frame`` is one) as their tag
  and a map of their fields. With ``frames="jpeg"`` a frame's image is written as JPEG (lossy,
  about ten times smaller; needs OpenCV on both sides); raw, lossless, is the default.

Decoding never imports or calls anything named in the message except registered record types,
so a message cannot run code. Bad bytes raise :class:`CodecError`, never anything else.

:class:`PickleCodec` is there for objects nothing else can write. It is an explicit opt-in and it
warns: whoever can write to the Redis server can then run code in every worker.
"""

from __future__ import annotations

import pickle
import warnings
from typing import Any, Protocol, runtime_checkable

import numpy as np

try:
    import msgpack
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = (
        "aioflow.transport needs msgpack and redis: pip install aioflow[redis] "
        "(quoted in zsh: pip install 'aioflow[redis]')"
    )
    raise ImportError(msg) from exc

from .. import wire
from ..errors import AioflowError

__all__ = [
    "Codec",
    "CodecError",
    "MsgpackCodec",
    "PickleCodec",
    "PickleCodecWarning",
    "codec_named",
    "pack_plain",
    "unpack_plain",
]

_NDARRAY = 1
_TUPLE = 2
_RECORD = 3
_SCALAR = 4
_BIGINT = 5

#: arrays of at least this many bytes skip msgpack's copies (:func:`_array_head`)
_LARGE = 64 * 1024


class CodecError(AioflowError):
    """An item cannot be written, or bytes cannot be read back as an item."""


class PickleCodecWarning(UserWarning):
    """The pickle codec is in use: whoever can write to the transport can run code."""


@runtime_checkable
class Codec(Protocol):
    """Turns items into bytes and back."""

    #: written with every message; a receiver refuses messages of a codec it was not given
    name: str

    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


def _dtype(obj: np.ndarray[Any, Any] | np.generic) -> str:
    dtype = obj.dtype
    if dtype.hasobject or dtype.fields is not None:
        msg = (
            f"cannot write a numpy {type(obj).__name__} of dtype {dtype}: object and structured "
            "dtypes need pickle; convert to a plain numeric dtype first"
        )
        raise CodecError(msg)
    return str(dtype.str)


def _read_dtype(text: Any) -> np.dtype[Any]:
    if not isinstance(text, str):
        msg = f"array dtype must be a string, found {type(text).__name__}"
        raise CodecError(msg)
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError) as exc:
        msg = f"bad array dtype {text!r}: {exc}"
        raise CodecError(msg) from exc
    if dtype.hasobject or dtype.fields is not None:
        msg = f"refused array dtype {text!r}: object and structured dtypes are not accepted"
        raise CodecError(msg)
    return dtype


def _sized(n: int, small: tuple[int, int, int]) -> bytes:
    """The type byte and length of a msgpack bin (``small`` its 8, 16 and 32-bit type bytes)
    or ext of ``n`` bytes, as msgpack writes them."""
    if n < 0x100:
        return bytes((small[0], n))
    if n < 0x10000:
        return bytes((small[1],)) + n.to_bytes(2, "big")
    return bytes((small[2],)) + n.to_bytes(4, "big")


def _ext_head(code: int, n: int) -> bytes:
    """The header of a msgpack ext of type ``code`` and ``n`` bytes of data."""
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}.get(n)
    if fixed is not None:
        return bytes((fixed, code))
    return _sized(n, (0xC7, 0xC8, 0xC9)) + bytes((code,))


def _array_head(obj: np.ndarray[Any, Any]) -> tuple[bytes, memoryview]:
    """An array's ext data (``[dtype, shape, bytes]`` in msgpack) as its head, all but the
    bytes, and its bytes (a view of a C-contiguous array: no copy), which joined make what
    msgpack writes."""
    dtype = _dtype(obj)
    flat = np.ascontiguousarray(obj).reshape(-1).view(np.uint8)
    head = b"".join(
        (
            b"\x93",  # an array of 3
            msgpack.packb(dtype, use_bin_type=True),
            msgpack.packb([int(n) for n in obj.shape]),
            _sized(flat.nbytes, (0xC4, 0xC5, 0xC6)),
        )
    )
    return head, flat.data


def _array_from(text: Any, shape: Any, body: Any) -> np.ndarray[Any, Any]:
    """The array of an ``[dtype, shape, bytes]`` ext (``body`` bytes-like), a writable copy.

    Raises:
        CodecError: they do not make an array.
    """
    dtype = _read_dtype(text)
    if not (
        isinstance(shape, list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        and isinstance(body, bytes | memoryview)
    ):
        msg = "bad array: shape must be a list of ints >= 0 and data bytes"
        raise CodecError(msg)
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(body):
        msg = (
            f"bad array: shape {tuple(shape)} of {dtype} needs "
            f"{count * dtype.itemsize} bytes, found {len(body)}"
        )
        raise CodecError(msg)
    # A copy: a block may write into its array, as it may locally.
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()


def _read_large_array(data: bytes, start: int) -> np.ndarray[Any, Any] | None:
    """The array whose ``[dtype, shape, bytes]`` fills ``data`` from ``start`` to its end, read
    with one copy of its bytes (msgpack would copy them twice more); None when ``data`` is not
    laid out so there (the caller reads it with msgpack, which says what is wrong).

    Raises:
        CodecError: it is, but they do not make an array.
    """
    view = memoryview(data)
    head = msgpack.Unpacker(raw=False)
    head.feed(view[start : start + 1024])  # dtype and shape: 64 dimensions take < 600 bytes
    try:
        if head.read_array_header() != 3:
            return None
        text = head.unpack()
        shape = head.unpack()
    except Exception:  # msgpack raises several unrelated types on bad input
        return None
    at = start + head.tell()
    kind = data[at] if at < len(data) else None
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(kind) if kind is not None else None
    if width is None:
        return None
    n = int.from_bytes(data[at + 1 : at + 1 + width], "big")
    at += 1 + width
    if at + n != len(data):
        return None
    return _array_from(text, shape, view[at:])


class MsgpackCodec:
    """msgpack for structure, raw buffers for numpy arrays, tags for registered records.

    Args:
        frames: how video frames (:class:`aioflow.io.video.Frame`) are written: ``"raw"``
            (default: their pixels as they are, lossless) or ``"jpeg"`` (their image as JPEG:
            lossy, about a tenth of the bytes, and OpenCV's encoding time; a frame whose image
            is not uint8 ``(h, w)`` or ``(h, w, 3)`` still goes raw). A receiver reads both
            kinds, whatever its own setting.
        jpeg_quality: with ``frames="jpeg"``: 0 to 100 (OpenCV's scale; 95 is its default).

    >>> import numpy as np
    >>> codec = MsgpackCodec()
    >>> codec.decode(codec.encode({"box": (1, 2), "mask": np.eye(2, dtype=np.uint8)}))["box"]
    (1, 2)
    """

    name = "msgpack"

    def __init__(self, *, frames: str = "raw", jpeg_quality: int = 90) -> None:
        if frames not in ("raw", "jpeg"):
            msg = f"MsgpackCodec: frames must be 'raw' or 'jpeg', got {frames!r}"
            raise ValueError(msg)
        if (
            isinstance(jpeg_quality, bool)
            or not isinstance(jpeg_quality, int)
            or not 0 <= jpeg_quality <= 100
        ):
            msg = f"MsgpackCodec: jpeg_quality must be an int from 0 to 100, got {jpeg_quality!r}"
            raise ValueError(msg)
        self.frames = frames
        self.jpeg_quality = jpeg_quality
        self._options = {"quality": jpeg_quality}

    def __repr__(self) -> str:
        if self.frames == "raw":
            return "MsgpackCodec()"
        return f"MsgpackCodec(frames={self.frames!r}, jpeg_quality={self.jpeg_quality})"

    def encode(self, obj: Any) -> bytes:
        if type(obj) is np.ndarray and obj.nbytes >= _LARGE:
            # A frame alone: its bytes go once into the message, not through msgpack's buffers.
            head, flat = _array_head(obj)
            return b"".join((_ext_head(_NDARRAY, len(head) + flat.nbytes), head, flat))
        try:
            data = msgpack.packb(obj, default=self._default, use_bin_type=True, strict_types=True)
        except CodecError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            msg = f"cannot write {type(obj).__name__}: {exc}"
            raise CodecError(msg) from exc
        return bytes(data)

    def _pack(self, obj: Any) -> bytes:
        return bytes(
            msgpack.packb(obj, default=self._default, use_bin_type=True, strict_types=True)
        )

    def _default(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            if obj.nbytes >= _LARGE:
                head, flat = _array_head(obj)
                return msgpack.ExtType(_NDARRAY, b"".join((head, flat)))
            dtype = _dtype(obj)
            body = np.ascontiguousarray(obj).tobytes()
            return msgpack.ExtType(_NDARRAY, self._pack([dtype, list(obj.shape), body]))
        if isinstance(obj, np.generic):
            dtype = _dtype(obj)
            return msgpack.ExtType(_SCALAR, self._pack([dtype, obj.tobytes()]))
        if isinstance(obj, tuple):
            return msgpack.ExtType(_TUPLE, self._pack(list(obj)))
        record = wire.lookup_type(type(obj))
        if record is not None:
            if self.frames != "raw":
                variant = wire.lookup_variant(type(obj), self.frames)
                if variant is not None:
                    try:
                        fields = variant.to_fields(obj, self._options)
                    except Exception as exc:
                        msg = f"cannot write a {record.tag!r} as {self.frames}: {exc}"
                        raise CodecError(msg) from exc
                    if fields is not None:
                        return msgpack.ExtType(_RECORD, self._pack([variant.tag, fields]))
            return msgpack.ExtType(_RECORD, self._pack([record.tag, record.to_fields(obj)]))
        # Subclasses of the plain types (strict_types sends them here): write the plain value.
        if isinstance(obj, bool):
            return bool(obj)
        if isinstance(obj, int):
            if -(2**63) <= obj < 2**64:
                return int(obj)
            return msgpack.ExtType(_BIGINT, str(int(obj)).encode())
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, bytes):
            return bytes(obj)
        if isinstance(obj, list):
            return list(obj)
        if isinstance(obj, dict):
            return dict(obj)
        if isinstance(obj, bytearray | memoryview):
            return bytes(obj)
        msg = (
            f"cannot write a {type(obj).__module__}.{type(obj).__qualname__}: items must be built "
            "from None, bool, int, float, str, bytes, list, tuple, dict, numpy arrays and types "
            "registered with aioflow.wire.register"
        )
        raise CodecError(msg)

    def decode(self, data: bytes) -> Any:
        if (
            len(data) >= _LARGE
            and data[0] == 0xC9  # an ext32 filling the message, of an array
            and data[5] == _NDARRAY
            and int.from_bytes(data[1:5], "big") == len(data) - 6
        ):
            array = _read_large_array(data, 6)
            if array is not None:
                return array
        try:
            return msgpack.unpackb(data, ext_hook=self._ext, raw=False, strict_map_key=False)
        except CodecError:
            raise
        except Exception as exc:  # msgpack raises several unrelated types on bad input
            msg = f"not a msgpack message: {type(exc).__name__}: {exc}"
            raise CodecError(msg) from exc

    def _unpack(self, data: bytes) -> Any:
        return msgpack.unpackb(data, ext_hook=self._ext, raw=False, strict_map_key=False)

    def _ext(self, code: int, data: bytes) -> Any:
        if code == _NDARRAY:
            if len(data) >= _LARGE:
                array = _read_large_array(data, 0)
                if array is not None:
                    return array
            parts = self._unpack(data)
            if not (isinstance(parts, list) and len(parts) == 3):
                msg = "bad array: expected [dtype, shape, bytes]"
                raise CodecError(msg)
            return _array_from(*parts)
        if code == _SCALAR:
            parts = self._unpack(data)
            if not (isinstance(parts, list) and len(parts) == 2 and isinstance(parts[1], bytes)):
                msg = "bad numpy scalar: expected [dtype, bytes]"
                raise CodecError(msg)
            dtype = _read_dtype(parts[0])
            if len(parts[1]) != dtype.itemsize:
                msg = f"bad numpy scalar: {dtype} needs {dtype.itemsize} bytes"
                raise CodecError(msg)
            return np.frombuffer(parts[1], dtype=dtype)[0]
        if code == _TUPLE:
            values = self._unpack(data)
            if not isinstance(values, list):
                msg = "bad tuple: expected an array"
                raise CodecError(msg)
            return tuple(values)
        if code == _RECORD:
            parts = self._unpack(data)
            if not (
                isinstance(parts, list)
                and len(parts) == 2
                and isinstance(parts[0], str)
                and isinstance(parts[1], dict)
                and all(isinstance(k, str) for k in parts[1])
            ):
                msg = "bad record: expected [tag, {field: value}]"
                raise CodecError(msg)
            try:
                record = wire.lookup_tag(parts[0])
            except LookupError as exc:
                raise CodecError(str(exc)) from exc
            try:
                return record.from_fields(parts[1])
            except Exception as exc:
                msg = f"cannot rebuild a {parts[0]!r} from its fields: {exc}"
                raise CodecError(msg) from exc
        if code == _BIGINT:
            try:
                return int(data.decode("ascii"))
            except ValueError as exc:
                msg = "bad big integer"
                raise CodecError(msg) from exc
        msg = f"unknown msgpack extension type {code}"
        raise CodecError(msg)


class PickleCodec:
    """Pickle, for items nothing else can write. Opt-in, and it warns.

    Whoever can write to the transport (the Redis server) can make every process that decodes
    with this codec run any code. Use it only on a Redis that nothing untrusted can reach.
    """

    name = "pickle"

    def __init__(self) -> None:
        warnings.warn(
            "aioflow: the pickle codec is in use; whoever can write to the Redis server can run "
            "code in every worker and caller. Prefer the default msgpack codec "
            "(register your types with aioflow.wire.register)",
            PickleCodecWarning,
            stacklevel=2,
        )

    def encode(self, obj: Any) -> bytes:
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            msg = f"cannot pickle {type(obj).__name__}: {exc}"
            raise CodecError(msg) from exc

    def decode(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)  # the user opted in, and was warned
        except Exception as exc:
            msg = f"not a pickle: {type(exc).__name__}: {exc}"
            raise CodecError(msg) from exc


def pack_plain(obj: Any) -> bytes:
    """msgpack of plain data (the messages' own fields; no extension types)."""
    return bytes(msgpack.packb(obj, use_bin_type=True))


def unpack_plain(data: bytes) -> Any:
    """Read :func:`pack_plain`'s bytes; any msgpack error is a :class:`CodecError`."""
    try:
        return msgpack.unpackb(data, raw=False)
    except Exception as exc:
        msg = f"not msgpack ({type(exc).__name__})"
        raise CodecError(msg) from exc


def codec_named(name: str, *, frames: str = "raw", jpeg_quality: int = 90) -> Codec:
    """``"msgpack"`` (with :class:`MsgpackCodec`'s options) or ``"pickle"`` (which warns)."""
    if name == "msgpack":
        return MsgpackCodec(frames=frames, jpeg_quality=jpeg_quality)
    if name == "pickle":
        if frames != "raw":
            msg = f"frames={frames!r} needs the msgpack codec (pickle writes frames as they are)"
            raise ValueError(msg)
        return PickleCodec()
    msg = f"unknown codec {name!r}: expected 'msgpack' or 'pickle'"
    raise ValueError(msg)
