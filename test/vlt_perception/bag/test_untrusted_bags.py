"""Bags are data: a crafted bag must not run code, reach the live graph on foreign topics, write outside its folder
or exhaust memory."""

from __future__ import annotations

import importlib
import os
import struct
import sys
import tracemalloc
from io import BytesIO

import numpy as np
import pytest
import zstandard
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vlt_perception.bag import BagError
from vlt_perception.bag.limits import MCAP_MAGIC, BagLimits, check_mcap
from vlt_perception.bag.reader import open_bag
from vlt_perception.bag.replay import bag_topics, message_class, playback_topics, read_playback
from vlt_perception.bag.salvage import SalvagedBag
from vlt_perception.bag.writer import write_records_bag

STORE = get_typestore(Stores.ROS2_KILTED)
CAMERAS = ["/camera/image_raw", "/camera/image_raw/compressed"]


def _cdr(msgtype: str, **fields) -> bytes:
    return bytes(STORE.serialize_cdr(STORE.types[msgtype](**fields), msgtype))


def _twist() -> bytes:
    vec = STORE.types["geometry_msgs/msg/Vector3"]
    return _cdr("geometry_msgs/msg/Twist", linear=vec(x=1.0, y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=0.5))


def _bag_with_its_own_module(root):
    """``root/bags/evil``: a bag whose image connection is typed ``bags.evil/msg/Image`` and whose folder ships
    ``msg.py`` (which would write ``root/ran``), plus a /cmd_vel connection."""
    bag = root / "bags" / "evil"
    bag.parent.mkdir(parents=True)
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/camera/image_raw", "bags.evil/msg/Image", rihs01="RIHS01_" + "0" * 64,
                                    msgdef=STORE.generate_msgdef("sensor_msgs/msg/Image")[0])
        cmd = writer.add_connection("/cmd_vel", "geometry_msgs/msg/Twist", typestore=STORE)
        writer.write(cam, 1, b"\x00\x01\x00\x00" + bytes(40))
        writer.write(cmd, 2, _twist())
    (bag / "msg.py").write_text(f"from pathlib import Path\nPath({str(root / 'ran')!r}).write_text('ran')\n"
                                "class Image:\n    pass\n")
    return bag


def test_a_type_named_by_a_bag_is_never_imported(tmp_path, monkeypatch):
    bag = _bag_with_its_own_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as tools/env.sh or `python -m` from a parent folder would
    types = bag_topics(bag)
    assert types["/camera/image_raw"] == "bags.evil/msg/Image"
    for msgtype in types.values():
        with pytest.raises(BagError, match="not one the player and evaluator handle"):
            message_class(msgtype)
    selected, skipped = playback_topics(types, CAMERAS, ["/condition"])
    assert selected == {} and set(skipped) == {"/camera/image_raw", "/cmd_vel"}
    assert "bags.evil/msg/Image" in skipped["/camera/image_raw"]
    assert not (tmp_path / "ran").exists()
    # the planted module is live: importing the name the bag gives would have run it
    monkeypatch.delitem(sys.modules, "bags.evil.msg", raising=False)
    try:
        importlib.import_module("bags.evil.msg")
        assert (tmp_path / "ran").read_text() == "ran"
    finally:
        for name in ("bags.evil.msg", "bags.evil", "bags"):
            sys.modules.pop(name, None)


def test_the_player_selects_only_camera_ground_truth_and_condition_topics(tmp_path):
    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=STORE) for topic, msgtype in (
            ("/camera/image_raw", "sensor_msgs/msg/Image"), ("/condition", "std_msgs/msg/String"),
            ("/ground_truth/labels", "sensor_msgs/msg/Image"), ("/cmd_vel", "geometry_msgs/msg/Twist"),
            ("/ground_truth/detections", "std_msgs/msg/String"))}
        header = STORE.types["std_msgs/msg/Header"](stamp=STORE.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                                    frame_id="cam")
        img = _cdr("sensor_msgs/msg/Image", header=header, height=1, width=1, encoding="mono8", is_bigendian=0,
                   step=1, data=np.zeros(1, np.uint8))
        writer.write(conns["/condition"], 1, _cdr("std_msgs/msg/String", data="fog"))
        writer.write(conns["/cmd_vel"], 2, _twist())
        writer.write(conns["/camera/image_raw"], 3, img)
        writer.write(conns["/ground_truth/labels"], 4, img)
        writer.write(conns["/ground_truth/detections"], 5, _cdr("std_msgs/msg/String", data="x"))
    selected, skipped = playback_topics(bag_topics(bag), CAMERAS, ["/condition"])
    assert selected == {"/camera/image_raw": "sensor_msgs/msg/Image", "/condition": "std_msgs/msg/String",
                        "/ground_truth/labels": "sensor_msgs/msg/Image"}
    assert set(skipped) == {"/cmd_vel", "/ground_truth/detections"}
    assert "expected one of ['vision_msgs/msg/Detection2DArray']" in skipped["/ground_truth/detections"]
    played = [m.topic for m in read_playback(bag, list(selected))]
    assert played == ["/condition", "/camera/image_raw", "/ground_truth/labels"]


# --- decompression bombs ---------------------------------------------------------------------------------------
BOMB_BYTES = 512 << 20  # what the crafted chunk inflates to


def _record(opcode: int, body: bytes) -> bytes:
    return struct.pack("<BQ", opcode, len(body)) + body


def _string(text: str) -> bytes:
    return struct.pack("<I", len(text)) + text.encode()


def _zstd_bomb(n: int) -> bytes:
    """zstd frame of ``n`` bytes, made in pieces (a few KB): one record of an unknown opcode filled with zeros (so
    that a parser skips it in one read once it is inflated)."""
    out = BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as writer:
        writer.write(struct.pack("<BQ", 0x80, n - 9))
        piece = bytes(1 << 20)
        for _ in range(n // len(piece) - 1):
            writer.write(piece)
        writer.write(bytes(len(piece) - 9))
    return out.getvalue()


def _bomb_mcap(path, declared: int = 100, footer: bool = True, inflates_to: int = BOMB_BYTES):
    """An MCAP file (ros2 profile) with a schema, a channel and one zstd chunk declaring ``declared`` bytes whose
    data inflates to ``inflates_to``."""
    msgdef = STORE.generate_msgdef("std_msgs/msg/String")[0]
    data = _zstd_bomb(inflates_to)
    parts = [MCAP_MAGIC, _record(0x01, _string("ros2") + _string("crafted")),
             _record(0x03, struct.pack("<H", 1) + _string("std_msgs/msg/String") + _string("ros2msg")
                     + _string(msgdef)),
             _record(0x04, struct.pack("<HH", 1, 1) + _string("/condition") + _string("cdr") + struct.pack("<I", 0)),
             _record(0x06, struct.pack("<QQQI", 0, 0, declared, 0) + _string("zstd") + struct.pack("<Q", len(data))
                     + data)]
    if footer:
        parts += [_record(0x0F, struct.pack("<I", 0)), _record(0x02, struct.pack("<QQI", 0, 0, 0)), MCAP_MAGIC]
    path.write_bytes(b"".join(parts))
    assert path.stat().st_size < 64 << 10  # a small file ...
    return path


def _peak_traced(fn):
    """(result or exception, peak bytes allocated while ``fn`` ran): Python-level allocations, which include the
    bytes objects that decompressors return."""
    tracemalloc.start()
    try:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_zstd_bomb_is_refused_before_rosbags_inflates_it(tmp_path):
    bag = _bomb_mcap(tmp_path / "bomb.mcap")
    result, peak = _peak_traced(lambda: open_bag(bag))
    assert peak < 32 << 20, f"opening a {bag.stat().st_size}-byte bag took {peak >> 20} MiB"
    assert isinstance(result, BagError), result
    assert str(bag) in str(result) and "inflates beyond 100 bytes, its declared size" in str(result)
    # a chunk that declares more than the limit is refused without decompressing anything
    big = _bomb_mcap(tmp_path / "big.mcap", declared=BOMB_BYTES)
    with pytest.raises(BagError, match="more than the limit of 1048576"):
        check_mcap(big, BagLimits(max_chunk_bytes=1 << 20))
    # a chunk that yields less than it declares is damaged, not a bomb: left to the reader (and salvage)
    check_mcap(_bomb_mcap(tmp_path / "short.mcap", declared=4 << 20, inflates_to=2 << 20))


def test_salvage_caps_each_chunk_at_its_declared_size(tmp_path):
    bag = _bomb_mcap(tmp_path / "bomb.mcap", footer=False)
    result, peak = _peak_traced(lambda: SalvagedBag(bag))
    assert peak < 32 << 20, f"salvaging a {bag.stat().st_size}-byte bag took {peak >> 20} MiB"
    assert isinstance(result, SalvagedBag), result
    assert result.message_count == 0 and any("its declared size" in note for note in result.notes), result.notes
    # the chunk limit applies even when the chunk declares that much
    big = _bomb_mcap(tmp_path / "big.mcap", declared=BOMB_BYTES, footer=False)
    result, peak = _peak_traced(lambda: SalvagedBag(big, BagLimits(max_chunk_bytes=1 << 20)))
    assert peak < 32 << 20 and any("VLT_BAG_MAX_CHUNK_BYTES" in note for note in result.notes), result.notes


def test_salvage_caps_the_total_it_keeps(fx, tiny_cityscapes, tmp_path):
    _, records = tiny_cityscapes
    write_records_bag(records, tmp_path / "bag", read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    (mcap,) = (tmp_path / "bag").glob("*.mcap")
    os.truncate(mcap, int(mcap.stat().st_size * 0.9))
    whole = SalvagedBag(tmp_path / "bag")
    kept = sum(len(raw) for *_, raw in whole._messages)
    limit = mcap.stat().st_size + kept // 2  # the file is read, then half of its messages fit
    capped = SalvagedBag(tmp_path / "bag", BagLimits(max_salvage_bytes=limit))
    assert 0 < capped.message_count < whole.message_count
    assert mcap.stat().st_size + sum(len(raw) for *_, raw in capped._messages) <= limit
    assert any("salvage stopped" in note for note in capped.notes), capped.notes


# --- sqlite3 -------------------------------------------------------------------------------------------------------
def test_a_crafted_db3_name_cannot_choose_the_sqlite_mode_or_path(fx, tiny_cityscapes, tmp_path):
    _, records = tiny_cityscapes
    write_records_bag(records[:2], tmp_path / "src", read_image=fx.read_png_rgb, storage="sqlite3")
    (db3,) = (tmp_path / "src").glob("*.db3")
    bag = tmp_path / "bag"
    bag.mkdir()
    outside = tmp_path / "outside.db3"
    # As "file:<path>?mode=ro", this name ends the URI's path at its "?", decodes to "<bag>/../escaped" and sets
    # mode=rwc: sqlite would create <tmp>/escaped, outside the bag.
    crafted = bag / "%2E%2E%2Fescaped?mode=rwc&x=.db3"
    crafted.write_bytes(db3.read_bytes())
    salvaged = SalvagedBag(bag)
    assert not (tmp_path / "escaped").exists()
    assert sorted(p.name for p in bag.iterdir()) == [crafted.name]
    assert salvaged.message_count > 0, salvaged.notes  # the crafted name is opened as the file it names
    # a storage file that resolves outside the bag folder is skipped
    for file in bag.iterdir():
        file.unlink()
    outside.write_bytes(db3.read_bytes())
    (bag / "link.db3").symlink_to(outside)
    with pytest.raises(ValueError, match="no .mcap or .db3"):
        SalvagedBag(bag)


def test_the_chunk_index_must_point_at_checked_chunks(tmp_path):
    """rosbags reads messages through the summary's chunk index: one pointing into another record (where the walk
    over the data section never looked) is refused."""
    msgdef = STORE.generate_msgdef("std_msgs/msg/String")[0]
    data = _zstd_bomb(BOMB_BYTES)
    chunk = _record(0x06, struct.pack("<QQQI", 0, 0, 100, 0) + _string("zstd") + struct.pack("<Q", len(data)) + data)
    head = b"".join([MCAP_MAGIC, _record(0x01, _string("ros2") + _string("crafted")),
                     _record(0x03, struct.pack("<H", 1) + _string("std_msgs/msg/String") + _string("ros2msg")
                             + _string(msgdef)),
                     _record(0x04, struct.pack("<HH", 1, 1) + _string("/condition") + _string("cdr")
                             + struct.pack("<I", 0))])
    hidden_at = len(head) + 9  # the chunk sits inside an attachment-like record
    body = head + _record(0x80, chunk) + _record(0x0F, struct.pack("<I", 0))
    index = _record(0x08, struct.pack("<QQQQ", 0, 1, hidden_at, len(chunk)) + struct.pack("<IHQ", 10, 1, 0)
                    + struct.pack("<Q", 0) + _string("zstd") + struct.pack("<QQ", len(data), 100))
    footer = _record(0x02, struct.pack("<QQI", len(body), 0, 0)) + MCAP_MAGIC
    bag = tmp_path / "hidden.mcap"
    bag.write_bytes(body + index + footer)
    with pytest.raises(BagError, match=f"chunk index at byte {len(body)} describes a chunk at byte {hidden_at}"):
        check_mcap(bag)



def test_a_bomb_header_frame_is_counted_and_the_bag_still_read(fx, tmp_path):
    """A compressed frame whose PNG header claims 200 Mpx (over PIL's own limit) is one undecodable frame, not the
    end of the evaluation."""
    import zlib

    from vlt_perception.bag import messages as M
    from vlt_perception.bag.reader import BagFrameReader
    from vlt_perception.bag.typestore import get_bag_typestore

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20_000, 10_000, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))
    store = get_bag_typestore()
    compressed, image = "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image"
    frames = [fx.synthetic_frame(i, "clear") for i in range(3)]
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/camera/image_raw/compressed", compressed, typestore=store)
        gt = writer.add_connection("/ground_truth/labels", image, typestore=store)
        for i, (rgb, labels) in enumerate(frames):
            stamp = (i + 1) * 100_000_000
            msg = M.compressed_image_msg(store, rgb, stamp, "png")
            if i == 1:
                msg.data = np.frombuffer(bomb, np.uint8)
            writer.write(cam, stamp, store.serialize_cdr(msg, compressed))
            writer.write(gt, stamp + 1, store.serialize_cdr(M.labels_msg(store, labels, stamp), image))
    with BagFrameReader(tmp_path / "bag") as reader:
        read = list(reader.frames())
        issues = reader.issues.as_dict()
    assert [f.stamp_ns for f in read if f.image is not None] == [100_000_000, 300_000_000]
    assert issues["undecodable_message"]["count"] == 1
    assert "pixel limit" in issues["undecodable_message"]["examples"][0]
