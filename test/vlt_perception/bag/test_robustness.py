"""Messy bags: truncated files, corrupt messages, odd encodings, out-of-order stamps, missing topics.

Each case must give a clear error or a partial result with the problem counted, never a silent loss.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from vlt_perception.bag import BagError
from vlt_perception.bag import messages as M
from vlt_perception.bag.offline import evaluate_bags
from vlt_perception.bag.reader import BagFrameReader
from vlt_perception.bag.typestore import get_bag_typestore
from vlt_perception.bag.writer import write_records_bag

IMAGE = "sensor_msgs/msg/Image"


def _frames(fx, n):
    return [fx.synthetic_frame(i, "clear") for i in range(n)]


def _handmade_bag(path, frames, stamps, *, corrupt=(), rgb_labels=(), labels=True):
    """A bag written message by message, so that single messages can be broken on purpose. Log (receive) times
    increase with the message index, whatever the header stamps say."""
    store = get_bag_typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/camera/image_raw", IMAGE, typestore=store)
        gt = writer.add_connection("/ground_truth/labels", IMAGE, typestore=store) if labels else None
        for i, ((image, lab), stamp) in enumerate(zip(frames, stamps)):
            log_time = 1_000_000 + 10 * i
            writer.write(cam, log_time, store.serialize_cdr(M.image_msg(store, image, stamp), IMAGE))
            if gt is None:
                continue
            msg = M.image_msg(store, image, stamp) if i in rgb_labels else M.labels_msg(store, lab, stamp)
            raw = bytes(store.serialize_cdr(msg, IMAGE))
            writer.write(gt, log_time + 1, raw[: len(raw) // 3] if i in corrupt else raw)
    return path


def test_corrupt_and_badly_encoded_messages_are_counted(fx, tmp_path, palette_onnx):
    frames = _frames(fx, 5)
    bag = _handmade_bag(tmp_path / "bag", frames, [10 * i + 1 for i in range(5)], corrupt={1}, rgb_labels={3})
    with BagFrameReader(bag) as reader:
        got = [f.stamp_ns for f in reader.frames()]
        counts = dict(reader.issues.counts)
    assert got == [1, 21, 41]
    assert counts["corrupt_message"] == 1 and counts["undecodable_message"] == 1
    assert counts["unmatched_image"] == 2  # the two frames whose labels were lost
    report = evaluate_bags([bag], palette_onnx, tmp_path / "r", figures=False)
    assert report["bags"]["bag"]["frames"] == 3
    assert report["bags"]["bag"]["counts"]["reader_corrupt_message"] == 1
    assert report["bags"]["bag"]["issues"]["undecodable_message"]["examples"][0].startswith("/ground_truth/labels")
    assert report["bags"]["bag"]["segmentation"]["mIoU"] == 1.0


def test_out_of_order_stamps_still_match(fx, tmp_path):
    frames = _frames(fx, 4)
    stamps = [300, 100, 400, 200]
    bag = _handmade_bag(tmp_path / "bag", frames, stamps)
    with BagFrameReader(bag) as reader:
        got = {f.stamp_ns: f for f in reader.frames()}
        assert reader.issues.counts["out_of_order_stamp"] == 2
    assert sorted(got) == sorted(stamps)
    for (image, labels), stamp in zip(frames, stamps):
        np.testing.assert_array_equal(got[stamp].labels, labels)
        np.testing.assert_array_equal(got[stamp].image, image)


def test_truncated_mcap_keeps_the_frames_before_the_cut(fx, tiny_cityscapes, tmp_path, palette_onnx):
    _, records = tiny_cityscapes
    records = records * 3  # 12 frames
    write_records_bag(records, tmp_path / "bag", read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    (mcap,) = (tmp_path / "bag").glob("*.mcap")
    os.truncate(mcap, int(mcap.stat().st_size * 0.6))  # e.g. the recorder was killed
    (tmp_path / "bag" / "metadata.yaml").unlink()  # ... before it wrote metadata.yaml
    with BagFrameReader(tmp_path / "bag") as reader:
        frames = list(reader.frames())
        issues = reader.issues.as_dict()
    assert 3 <= len(frames) < 12
    assert "truncated" in issues and "salvaged" in issues["truncated"]["examples"][0]
    for frame, record in zip(frames, records):
        np.testing.assert_array_equal(frame.labels, record["expected_labels"])
    report = evaluate_bags([tmp_path / "bag"], palette_onnx, tmp_path / "r", figures=False)
    assert report["bags"]["bag"]["frames"] == len(frames)
    assert report["bags"]["bag"]["counts"]["reader_truncated"] == 1


def test_unreadable_files_name_the_bag(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        BagFrameReader(tmp_path / "nope")
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not a bag at all")
    with pytest.raises(BagError, match=r"junk\.mcap: cannot open bag"):
        BagFrameReader(junk)


def test_missing_topics(fx, tmp_path, palette_onnx):
    frames = _frames(fx, 2)
    no_gt = _handmade_bag(tmp_path / "no_gt", frames, [1, 2], labels=False)
    with pytest.raises(BagError, match=r"no ground truth .* topics in the bag: /camera/image_raw"):
        BagFrameReader(no_gt)
    good = _handmade_bag(tmp_path / "good", frames, [1, 2])
    # One bag cannot be evaluated: it is reported with its error, the other bag still is.
    report = evaluate_bags([no_gt, good], palette_onnx, tmp_path / "r", figures=False)
    assert "no ground truth" in report["bags"]["no_gt"]["error"]
    assert report["bags"]["good"]["frames"] == 2 and report["bags"]["good"]["segmentation"]["mIoU"] == 1.0
    with BagFrameReader(good) as reader:  # labels but no boxes: evaluated without, and said so
        assert reader.issues.counts["missing_topic"] == 1 and not reader.has_boxes


def test_wrong_type_on_a_topic_is_reported(fx, tmp_path):
    store = get_bag_typestore()
    image, labels = fx.synthetic_frame(0, "clear")
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/camera/image_raw", IMAGE, typestore=store)
        wrong = writer.add_connection("/ground_truth/labels", "std_msgs/msg/String", typestore=store)
        writer.write(cam, 1, store.serialize_cdr(M.image_msg(store, image, 1), IMAGE))
        writer.write(wrong, 1, store.serialize_cdr(M.string_msg(store, "x"), "std_msgs/msg/String"))
    with pytest.raises(BagError, match="no ground truth"):
        BagFrameReader(tmp_path / "bag")


def test_model_failing_on_every_frame_is_a_bag_error(fx, tmp_path):
    """A model breaking the graph contract (float labels) fails each frame: reported, not a silent empty score."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(fx.palette_model(tmp_path / "m.onnx", confidence=False)))  # its last node: the Cast
    model.graph.node[-1].attribute[0].i = TensorProto.FLOAT  # Cast to float instead of uint8
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.save(model, str(tmp_path / "bad.onnx"))
    bag = _handmade_bag(tmp_path / "bag", _frames(fx, 2), [1, 2])
    report = evaluate_bags([bag], tmp_path / "bad.onnx", tmp_path / "r", figures=False)
    assert "failed on every frame" in report["bags"]["bag"]["error"] and "uint8" in report["bags"]["bag"]["error"]
    assert report["bags"]["bag"]["counts"]["prediction_error"] == 2
