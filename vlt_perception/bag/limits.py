"""Memory bounds for reading bags from others: how much one MCAP chunk may inflate to, how much salvage may hold.

A zstd chunk of a few kilobytes can inflate to gigabytes. rosbags' MCAP reader (0.11) decompresses a chunk in one
call and compares the result with the chunk's declared size only afterwards, so :func:`check_mcap` walks an MCAP
file before rosbags sees it: every chunk (and every message record outside chunks) must fit ``max_chunk_bytes``,
and every compressed chunk is inflated as a stream, in pieces, to prove that it yields no more than it declares
(a chunk that yields less is damaged, not hostile: the reader reports it and salvage reads around it). The chunk
index in the summary, which rosbags follows when reading messages, must point at exactly those chunks.

Limits come from :class:`BagLimits`: defaults, or ``VLT_BAG_MAX_CHUNK_BYTES`` / ``VLT_BAG_MAX_SALVAGE_BYTES``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from vlt_perception.bag import BagError

MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_FOOTER, _OP_MESSAGE, _OP_CHUNK, _OP_CHUNK_INDEX = 0x02, 0x05, 0x06, 0x08
_RECORD_HEADER = 9  # opcode (1) + length (8)
_FOOTER = _RECORD_HEADER + 20 + len(MCAP_MAGIC)  # footer record (summary start, summary offset start, crc) + magic
_PIECE = 1 << 20  # streamed decompression hands out at most this much at a time
_CHECKED: set[tuple] = set()  # (resolved path, size, mtime, limits) of files that passed check_mcap


def _env_bytes(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise BagError(f"environment variable {name}: expected a number of bytes, got {value!r}") from None
    if number <= 0:
        raise BagError(f"environment variable {name}: must be > 0, got {number}")
    return number


@dataclass(frozen=True)
class BagLimits:
    """``max_chunk_bytes``: one MCAP chunk (or record) after decompression; ``max_salvage_bytes``: everything that
    salvage reads from a damaged bag (file bytes and recovered messages), which it holds in memory."""

    max_chunk_bytes: int = field(default_factory=lambda: _env_bytes("VLT_BAG_MAX_CHUNK_BYTES", 256 << 20))
    max_salvage_bytes: int = field(default_factory=lambda: _env_bytes("VLT_BAG_MAX_SALVAGE_BYTES", 8 << 30))


class ChunkTooLarge(ValueError):
    """A compressed chunk inflates beyond its bound (declared size or limit)."""


def bounded_decompress(data: bytes, compression: str, bound: int) -> bytes:
    """``data`` decompressed (``""``, ``"zstd"`` or ``"lz4"``), never holding more than ``bound`` bytes of output.
    Raises :class:`ChunkTooLarge` when the data would inflate beyond ``bound``; what a truncated stream yields
    before its end is returned."""
    out = bytearray()
    for piece in _pieces(data, compression):
        out += piece
        if len(out) > bound:
            raise ChunkTooLarge(f"inflates beyond {bound} bytes")
    return bytes(out)


def inflated_size(data: bytes, compression: str, bound: int) -> int:
    """How many bytes ``data`` inflates to, counted piece by piece without keeping them (at most one piece of
    1 MiB in memory); raises :class:`ChunkTooLarge` past ``bound``."""
    size = 0
    for piece in _pieces(data, compression):
        size += len(piece)
        if size > bound:
            raise ChunkTooLarge(f"inflates beyond {bound} bytes")
    return size


def _pieces(data: bytes, compression: str):
    """The decompressed output in pieces of at most 1 MiB: decompressing in one call would hold all of it before
    any size could be checked."""
    if compression == "":
        for start in range(0, len(data), _PIECE):
            yield data[start:start + _PIECE]
    elif compression == "zstd":
        import zstandard

        # A cut stream ends early, without an error (salvage keeps what is there).
        with zstandard.ZstdDecompressor().stream_reader(BytesIO(data), read_across_frames=True) as reader:
            while piece := reader.read(_PIECE):
                yield piece
    elif compression == "lz4":
        import lz4.frame

        rest = bytes(data)
        while rest:  # one decompressor per lz4 frame
            decompressor = lz4.frame.LZ4FrameDecompressor()
            piece = decompressor.decompress(rest, max_length=_PIECE)
            while True:
                yield piece
                if decompressor.eof or decompressor.needs_input or not piece:
                    break
                piece = decompressor.decompress(b"", max_length=_PIECE)
            rest = decompressor.unused_data if decompressor.eof else b""  # not at eof: the data was cut short
    else:
        raise ValueError(f"unsupported chunk compression {compression!r}")


def check_mcap(file: str | Path, limits: BagLimits | None = None) -> None:
    """Raise :class:`~vlt_perception.bag.BagError` naming ``file`` when a record or chunk of the MCAP file exceeds
    ``limits.max_chunk_bytes`` or inflates beyond its declared size, or when the summary's chunk index points at
    anything but those checked chunks. A file that ends early is left to the reader (and to salvage, which has its
    own bounds)."""
    limits = limits or BagLimits()
    file = Path(file)
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns, limits)
    if key in _CHECKED:  # a bag is opened several times (topics, playback, frames): inflate it once
        return
    size = stat.st_size
    with file.open("rb") as f:
        if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            return  # not MCAP: rosbags refuses it
        data_end = size
        if size >= len(MCAP_MAGIC) + _FOOTER:
            f.seek(size - _FOOTER)
            footer = f.read(_FOOTER)
            if footer[0] == _OP_FOOTER and footer[-len(MCAP_MAGIC):] == MCAP_MAGIC:
                summary_start = struct.unpack_from("<Q", footer, _RECORD_HEADER)[0]
                data_end = summary_start if len(MCAP_MAGIC) < summary_start <= size - _FOOTER else size - _FOOTER
        chunks = _check_records(f, file, len(MCAP_MAGIC), data_end, limits)
        if data_end < size - _FOOTER:
            _check_chunk_index(f, file, data_end, size - _FOOTER, chunks)
    _CHECKED.add(key)


def _check_records(f, file: Path, start: int, end: int, limits: BagLimits) -> dict[int, tuple[str, int, int]]:
    """Walk the data section; returns chunk offset -> (compression, compressed size, uncompressed size)."""
    chunks = {}
    pos = start
    while pos + _RECORD_HEADER <= end:
        f.seek(pos)
        opcode, length = struct.unpack("<BQ", f.read(_RECORD_HEADER))
        if pos + _RECORD_HEADER + length > end:
            return chunks  # cut short: the reader fails on it and salvage takes over
        if opcode == _OP_CHUNK:
            chunks[pos] = _check_chunk(f, file, pos, length, limits)
        elif opcode == _OP_MESSAGE and length > limits.max_chunk_bytes:  # read whole, like an inflated chunk
            raise BagError(f"{file}: message record at byte {pos} has {length} bytes, more than the limit of "
                           f"{limits.max_chunk_bytes} (VLT_BAG_MAX_CHUNK_BYTES)")
        pos += _RECORD_HEADER + length
    return chunks


def _check_chunk(f, file: Path, pos: int, length: int, limits: BagLimits) -> tuple[str, int, int]:
    where = f"{file}: chunk at byte {pos}"
    head = f.read(28)  # message start / end time, uncompressed size (u64 each), uncompressed crc (u32)
    if len(head) < 28 or length < 40:
        raise BagError(f"{where}: record of {length} bytes is too short for a chunk")
    uncompressed = struct.unpack_from("<Q", head, 16)[0]
    (name_len,) = struct.unpack("<I", f.read(4))
    if 28 + 4 + name_len + 8 > length:
        raise BagError(f"{where}: compression name runs past the record")
    compression = f.read(name_len).decode("utf-8", "replace")
    (compressed,) = struct.unpack("<Q", f.read(8))
    if 28 + 4 + name_len + 8 + compressed > length:
        raise BagError(f"{where}: compressed data ({compressed} bytes) runs past the record")
    if uncompressed > limits.max_chunk_bytes or compressed > limits.max_chunk_bytes:
        raise BagError(f"{where}: {max(uncompressed, compressed)} bytes, more than the limit of "
                       f"{limits.max_chunk_bytes} (VLT_BAG_MAX_CHUNK_BYTES)")
    if compression:
        try:
            inflated_size(f.read(compressed), compression, uncompressed)
        except ChunkTooLarge as exc:
            raise BagError(f"{where}: {compression} data {exc}, its declared size") from None
        except Exception:  # damaged data: the reader reports it
            return compression, compressed, uncompressed
        # fewer bytes than declared: a damaged chunk, which the reader reports (and salvage reads around)
    return compression, compressed, uncompressed


def _check_chunk_index(f, file: Path, start: int, end: int, chunks: dict) -> None:
    from mcap.data_stream import ReadDataStream
    from mcap.records import ChunkIndex

    pos = start
    while pos + _RECORD_HEADER <= end:
        f.seek(pos)
        opcode, length = struct.unpack("<BQ", f.read(_RECORD_HEADER))
        if pos + _RECORD_HEADER + length > end:
            raise BagError(f"{file}: summary record at byte {pos} runs past the summary section")
        if opcode == _OP_CHUNK_INDEX:
            try:
                index = ChunkIndex.read(ReadDataStream(BytesIO(f.read(length))))
            except Exception as exc:
                raise BagError(f"{file}: damaged chunk index at byte {pos} ({exc})") from exc
            seen = chunks.get(index.chunk_start_offset)
            if seen != (index.compression, index.compressed_size, index.uncompressed_size):
                raise BagError(f"{file}: chunk index at byte {pos} describes a chunk at byte "
                               f"{index.chunk_start_offset} ({index.compression!r}, {index.compressed_size} -> "
                               f"{index.uncompressed_size} bytes) that the file does not hold as such ({seen})")
        pos += _RECORD_HEADER + length
