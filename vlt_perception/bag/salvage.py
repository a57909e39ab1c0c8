"""Best-effort reading of bags that rosbags cannot open: truncated MCAP files (recorder killed, copy cut short,
no summary / footer / metadata.yaml) and damaged sqlite3 databases.

MCAP: records are parsed in file order with the ``mcap`` library's record classes; a chunk cut short is
decompressed as far as its bytes go (uncompressed or zstd) and its complete messages are kept. sqlite3: rows are read
in insertion order until the first damaged page. The result offers the small part of the rosbags ``Reader`` API that
:class:`~vlt_perception.bag.reader.BagFrameReader` uses (``connections``, ``messages``, ``close``).

Salvage is a recovery path, not a streaming reader: the recovered messages are held in memory (fine for evaluation
bags of a few thousand frames of camera resolution; a multi-hour recording needs that much RAM).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import NamedTuple

import yaml

MCAP_MAGIC = b"\x89MCAP0\r\n"
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

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
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
            if file.suffix == ".mcap":
                self._salvage_mcap(file)
            else:
                self._salvage_sqlite(file)

    def _storage_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        return sorted(self.path.glob("*.mcap")) + sorted(self.path.glob("*.db3"))

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

        data = file.read_bytes()
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
                if message.channel_id in channels:
                    self._messages.append((channels[message.channel_id], message.log_time, message.data))
            else:
                stream.read(length)
            stream.read(start + length - stream.count)  # padding of newer record versions
        if stream.count < size:
            self.notes.append(f"{file}: {size - stream.count} trailing bytes in a {where} ignored")

    def _parse_chunk(self, chunk, schemas, channels, file: Path, complete: bool) -> None:
        from mcap.data_stream import ReadDataStream

        if chunk.compression == "":
            payload = chunk.data
        elif chunk.compression == "zstd":
            import zstandard

            try:
                payload = zstandard.ZstdDecompressor().decompressobj().decompress(chunk.data)
            except zstandard.ZstdError as exc:
                self.notes.append(f"{file}: damaged zstd chunk dropped ({exc})")
                return
        else:
            self.notes.append(f"{file}: {chunk.compression} chunk cannot be salvaged; dropped")
            return
        if not complete:
            self.notes.append(f"{file}: last chunk cut short; {len(payload)} of {chunk.uncompressed_size} bytes read")
        self._parse_records(ReadDataStream(BytesIO(payload)), len(payload), schemas, channels, file, top_level=False)

    # ----------------------------------------------------------------------------------------------- sqlite3
    def _salvage_sqlite(self, file: Path) -> None:
        try:
            db = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
            topics = {tid: self._connection((name, msgtype))
                      for tid, name, msgtype in db.execute("SELECT id, name, type FROM topics")}
            rows = db.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id")
            while True:
                row = rows.fetchone()
                if row is None:
                    break
                if row[0] in topics:
                    self._messages.append((topics[row[0]], int(row[1]), bytes(row[2])))
        except sqlite3.DatabaseError as exc:
            self.notes.append(f"{file}: sqlite3 reading stopped: {exc}")

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
