"""Message conversion: builders and the decoders shared by the bag reader and the evaluator node."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from vlt_perception.bag import messages as M
from vlt_perception.bag.typestore import get_bag_typestore


def test_labels_with_row_padding_and_bad_encodings():
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    padded = np.zeros((3, 6), np.uint8)
    padded[:, :4] = labels
    msg = SimpleNamespace(encoding="mono8", height=3, width=4, step=6, data=padded.tobytes())
    np.testing.assert_array_equal(M.decode_labels(msg), labels)
    with pytest.raises(M.MessageError, match="'rgb8'"):
        M.decode_labels(SimpleNamespace(encoding="rgb8", height=3, width=4, step=12, data=bytes(36)))
    with pytest.raises(M.MessageError, match="too small"):
        M.decode_labels(SimpleNamespace(encoding="mono8", height=3, width=4, step=4, data=bytes(5)))


def test_detections_round_trip_and_class_ids():
    store = get_bag_typestore()
    names = ["person", "car"]
    msg = M.detections_msg(store, [[1, 2, 5, 10], [0, 0, 2, 2]], [1, 0], names, 7, scores=[0.5, 0.9])
    raw = store.serialize_cdr(msg, "vision_msgs/msg/Detection2DArray")
    back = M.decode_detections(store.deserialize_cdr(raw, "vision_msgs/msg/Detection2DArray"), names)
    np.testing.assert_allclose(back["boxes"], [[1, 2, 5, 10], [0, 0, 2, 2]])
    assert back["labels"].tolist() == [1, 0] and back["scores"].tolist() == [0.5, 0.9]
    # Nodes that publish class indices as strings are understood too; unknown names are an error.
    msg.detections[0].results[0].hypothesis.class_id = "0"
    assert M.decode_detections(msg, names)["labels"].tolist() == [0, 0]
    msg.detections[0].results[0].hypothesis.class_id = "tram"
    with pytest.raises(M.MessageError, match="unknown class_id 'tram'"):
        M.decode_detections(msg, names)
    kept = M.decode_detections(msg, names, skip_unknown=True)  # ground truth the model cannot predict
    assert kept["labels"].tolist() == [0] and kept["unknown_class"] == 1


def test_image_and_stamp_round_trip():
    store = get_bag_typestore()
    image = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    msg = M.image_msg(store, image, 1_500_000_000_123)
    assert M.header_ns(msg) == 1_500_000_000_123
    raw = store.serialize_cdr(msg, "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(M.decode_image(store.deserialize_cdr(raw, "sensor_msgs/msg/Image")), image)
    with pytest.raises(M.MessageError, match="uint8 RGB"):
        M.image_msg(store, image[..., 0], 0)
