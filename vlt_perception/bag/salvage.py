"""Best-effort reading of bags that rosbags cannot open: truncated MCAP files (recorder killed, copy cut short,
no summary / footer / metadata.yaml) and damaged sqlite3 databases.

MCAP: records are parsed in file order with the ``mcap`` library's record classes; a chunk cut short is
decompressed as far as its bytes go (uncompressed or zstd) and its complete messages are kept. sqlite3: rows are read
in insertion order until the first damaged page. The result offers the small part of the rosbags ``Reader`` API that
:class:`~vlt_perception.bag.reader.BagFrameReader` uses (``connections``, ``messages``, ``close``).

Salvage is a recovery path, not a streaming reader: the recovered messages are held in memory (fine for evaluation
bags of a few thousand frames of camera resolution; a multi-hour recording needs that much RAM). Because the bags
come from others, what it takes is bounded (:class:`~vlt_perception.bag.limits.BagLimits`): each chunk inflates to
at most its declared size and ``max_chunk_bytes`` (one chunk at a time), and the bytes read plus the messages kept
stop at ``max_salvage_bytes`` (the rest is dropped with a note). Storage files that resolve outside the bag folder (a
symbolic link) are skipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import NamedTuple

import yaml

from vlt_perception.bag.limits import MCAP_MAGIC, BagLimits, ChunkTooLarge, bounded_decompress

_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06
_RECORD_HEADER = 9  # opcode (1) + length (8)


class SalvagedConnection(NamedTuple):
    id: int
    topic: str
    msgtype: str


class _Metadata(NamedTuple):
    custom: dict


class SalvagedBag:
    """Messages recovered from damaged storage files, in file order. ``notes`` says what was cut off."""

    def __init__(self, path: Path, limits: BagLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or BagLimits()
        self._budget = self.limits.max_salvage_bytes  # bytes salvage may still read or keep
        self.notes: list[str] = []
        self.connections: list[SalvagedConnection] = []
        self._messages: list[tuple[int, int, bytes]] = []  # connection id, log time ns, CDR bytes
        self.is_open = True
        self.storage = self  # reader.storage.metadata.custom, as on rosbags' DirectoryReader
        self.metadata = _Metadata(custom=self._read_custom_data())
        files = self._storage_files()
        if not files:
            raise ValueError(f"{self.path}: no .mcap or .db3 storage files")
        for file in files:
            if self._budget <= 0:
                self.notes.append(f"{file}: not read: salvage limit of {self.limits.max_salvage_bytes} bytes "
                                  "reached (VLT_BAG_MAX_SALVAGE_BYTES)")
            elif file.suffix == ".mcap":
                self._salvage_mcap(file)
            else:
                self._salvage_sqlite(file)

    def _storage_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        folder = self.path.resolve()
        files = []
        for file in sorted(self.path.glob("*.mcap")) + sorted(self.path.glob("*.db3")):
            if file.resolve().is_relative_to(folder):
                files.append(file)
            else:
                self.notes.append(f"{file}: resolves outside the bag folder ({file.resolve()}); skipped")
        return files

    def _read_custom_data(self) -> dict:
        meta = self.path / "metadata.yaml" if self.path.is_dir() else None
        if meta is None or not meta.is_file():
            return {}
        try:
            info = yaml.safe_load(meta.read_text()).get("rosbag2_bagfile_information", {})
            return dict(info.get("custom_data") or {})
        except Exception as exc:  # a damaged metadata.yaml must not hide the messages
            self.notes.append(f"{meta}: unreadable ({exc})")
            return {}

    def _connection(self, key: tuple[str, str]) -> int:
        for conn in self.connections:
            if (conn.topic, conn.msgtype) == key:
                return conn.id
        self.connections.append(SalvagedConnection(len(self.connections) + 1, *key))
        return len(self.connections)

    # ----------------------------------------------------------------------------------------------- MCAP
    def _salvage_mcap(self, file: Path) -> None:
        try:
            from mcap.data_stream import ReadDataStream
        except ImportError:
            self.notes.append(f"{file}: salvaging MCAP needs the mcap package (pip install -r "
                              "requirements/runtime.txt)")
            return

        size = file.stat().st_size
        with file.open("rb") as f:
            data = f.read(min(size, self._budget))  # read(n) reserves n bytes up front
        self._budget -= len(data)
        if len(data) < size:
            self.notes.append(f"{file}: only the first {len(data)} bytes read: salvage limit of "
                              f"{self.limits.max_salvage_bytes} bytes (VLT_BAG_MAX_SALVAGE_BYTES)")
        if not data.startswith(MCAP_MAGIC):
            self.notes.append(f"{file}: not an MCAP file (bad magic)")
            return
        schemas: dict[int, str] = {}
        channels: dict[int, int] = {}  # mcap channel id -> our connection id
        stream = ReadDataStream(BytesIO(data[len(MCAP_MAGIC):]))
        self._parse_records(stream, len(data) - len(MCAP_MAGIC), schemas, channels, file, top_level=True)

    def _parse_records(self, stream, size: int, schemas, channels, file: Path, top_level: bool) -> None:
        from mcap.records import Channel, Chunk, Message, Schema

        where = "file" if top_level else "chunk"
        while stream.count + _RECORD_HEADER <= size:
            if self._budget <= 0:
                return
            opcode, length = stream.read1(), stream.read8()
            start = stream.count
            complete = start + length <= size
            if opcode == _OP_CHUNK:
                chunk = Chunk.read(stream)  # reads what is there when the chunk is cut short
                self._parse_chunk(chunk, schemas, channels, file, complete)
                if not complete:
                    return
                continue
            if not complete:
                self.notes.append(f"{file}: {where} ends inside a record (opcode {opcode:#x}); rest dropped")
                return
            if opcode == _OP_SCHEMA:
                schema = Schema.read(stream)
                schemas[schema.id] = schema.name
            elif opcode == _OP_CHANNEL:
                channel = Channel.read(stream)
                channels[channel.id] = self._connection((channel.topic, schemas.get(channel.schema_id, "")))
            elif opcode == _OP_MESSAGE:
                message = Message.read(stream, length)
                if message.channel_id in channels and not self._keep(
                        channels[message.channel_id], message.log_time, message.data, file):
                    return
            else:
                stream.read(length)
            stream.read(start + length - stream.count)  # padding of newer record versions
        if stream.count < size:
            self.notes.append(f"{file}: {size - stream.count} trailing bytes in a {where} ignored")

    def _parse_chunk(self, chunk, schemas, channels, file: Path, complete: bool) -> None:
        from mcap.data_stream import ReadDataStream

        if chunk.compression not in ("", "zstd"):
            self.notes.append(f"{file}: {chunk.compression} chunk cannot be salvaged; dropped")
            return
        # A chunk never yields more than it declares (a few KB of zstd can inflate to gigabytes), nor more than
        # max_chunk_bytes; its messages then count against the salvage budget one by one.
        bound = min(chunk.uncompressed_size, self.limits.max_chunk_bytes)
        try:
            payload = bounded_decompress(chunk.data, chunk.compression, bound)
        except ChunkTooLarge as exc:
            limit = "its declared size" if bound == chunk.uncompressed_size else "VLT_BAG_MAX_CHUNK_BYTES"
            self.notes.append(f"{file}: chunk of {chunk.uncompressed_size} declared bytes {exc} ({limit}); dropped")
            return
        except Exception as exc:  # zstandard.ZstdError and friends
            self.notes.append(f"{file}: damaged {chunk.compression or 'uncompressed'} chunk dropped ({exc})")
            return
        if not complete:
            self.notes.append(f"{file}: last chunk cut short; {len(payload)} of {chunk.uncompressed_size} bytes read")
        self._parse_records(ReadDataStream(BytesIO(payload)), len(payload), schemas, channels, file, top_level=False)

    # ----------------------------------------------------------------------------------------------- sqlite3
    def _salvage_sqlite(self, file: Path) -> None:
        # A URI built from the raw name would let a name such as "x.db3?mode=rwc&" choose the mode (and
        # "#", "?" or "%" change the path): as_uri() percent-encodes the whole path.
        try:
            db = sqlite3.connect(file.resolve().as_uri() + "?mode=ro", uri=True)
            topics = {tid: self._connection((name, msgtype))
                      for tid, name, msgtype in db.execute("SELECT id, name, type FROM topics")}
            rows = db.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id")
            while True:
                row = rows.fetchone()
                if row is None:
                    break
                if row[0] in topics and not self._keep(topics[row[0]], int(row[1]), bytes(row[2]), file):
                    break
        except sqlite3.DatabaseError as exc:
            self.notes.append(f"{file}: sqlite3 reading stopped: {exc}")

    def _keep(self, conn_id: int, log_time: int, raw: bytes, file: Path) -> bool:
        """Keep one message; False (with a note) once the salvage limit is reached."""
        if len(raw) > self._budget:
            if self._budget > 0:
                self.notes.append(f"{file}: salvage stopped at {self.limits.max_salvage_bytes} bytes "
                                  "(VLT_BAG_MAX_SALVAGE_BYTES); later messages dropped")
            self._budget = 0
            return False
        self._budget -= len(raw)
        self._messages.append((conn_id, log_time, raw))
        return True

    # ------------------------------------------------------------------------------------- Reader-like API
    def messages(self, connections=()) -> Iterator[tuple[SalvagedConnection, int, bytes]]:
        wanted = {c.id for c in connections} or {c.id for c in self.connections}
        by_id = {c.id: c for c in self.connections}
        for conn_id, log_time, raw in self._messages:
            if conn_id in wanted:
                yield by_id[conn_id], log_time, raw

    @property
    def message_count(self) -> int:
        return len(self._messages)

    def close(self) -> None:
        self.is_open = False
