"""Online replay evaluation with real rclpy: bag player, segmentation node and evaluator in separate processes.

Lock-step playback must give the offline numbers (within 0.5 mIoU points) with no dropped frames. Runs only inside
a private network namespace (``./vlt test``; see test/conftest.py).
"""

from __future__ import annotations

import json

import pytest

from helpers.ros_graph import start_process
from vlt_perception.bag.offline import evaluate_bags
from vlt_perception.bag.writer import write_records_bag

# The player starts when the node listens to the camera and the evaluator to the ground truth and the node's labels.
WAIT = "[/camera/image_raw, /ground_truth/labels, /condition, /segmentation_node/out/labels]"
# With calibration the evaluator also takes the node's per-pixel confidence, which the node publishes once heard.
WAIT_CONFIDENCE = WAIT[:-1] + ", /segmentation_node/out/confidence]"


def _wait(proc, timeout: float, log) -> int:
    try:
        return proc.wait(timeout=timeout)
    except Exception:
        raise AssertionError(f"{proc.args} did not finish in {timeout} s:\n{log.read_text()}") from None


@pytest.mark.ros
def test_lockstep_replay_agrees_with_offline(fx, tiny_cityscapes, palette_onnx, tmp_path):
    _, records = tiny_cityscapes
    bag = tmp_path / "bag"
    write_records_bag(records, bag, read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    write_records_bag(records[:2], tmp_path / "source", read_image=fx.read_png_rgb,
                      read_sem_seg=fx.read_png_train_ids)
    offline = evaluate_bags([bag], palette_onnx, tmp_path / "offline", reference=tmp_path / "source",
                            figures=False)
    out = tmp_path / "online"
    logs = {name: tmp_path / f"{name}.log" for name in ("seg", "eval", "player")}
    seg_args = ["-m", "vlt_perception.nodes.segmentation_node", "--ros-args", "-p", f"model_path:={palette_onnx}",
                "-r", "~/in/image:=/camera/image_raw", "-p", "publish_confidence:=true"]
    eval_args = ["-m", "vlt_perception.nodes.evaluator_node", "--ros-args", "-p", f"out_dir:={out}",
                 "-p", "bag_name:=bag", "-p", "gt_detections_topic:=''", "-p", "figures:=false",
                 "-p", f"reference_report:={tmp_path / 'offline' / 'report.json'}",
                 "-p", "confidence_topic:=/segmentation_node/out/confidence"]
    player_args = ["-m", "vlt_perception.nodes.bag_player_node", "--ros-args", "-p", f"bag:={bag}",
                   "-p", "mode:=lockstep", "-p", f"wait_topics:={WAIT_CONFIDENCE}"]
    with start_process(seg_args, logs["seg"]), start_process(eval_args, logs["eval"]) as evaluator, \
            start_process(player_args, logs["player"]) as player:
        assert _wait(player, 90, logs["player"]) == 0, logs["player"].read_text()
        assert _wait(evaluator, 30, logs["eval"]) == 0, logs["eval"].read_text()
    online = json.loads((out / "report.json").read_text())
    assert online["mode"] == "online"
    counts = online["bags"]["bag"]["counts"]
    assert counts["matched"] == len(records) and counts["dropped_frames"] == 0, counts
    assert online["bags"]["bag"]["player"]["timeouts"] == 0
    for condition in ("clear", "fog"):
        want = offline["conditions"][condition]["segmentation"]["mIoU"]
        got = online["conditions"][condition]["segmentation"]["mIoU"]
        assert abs(got - want) * 100 <= 0.5, (condition, got, want)
        retention = offline["conditions"][condition]["retention"]["mIoU"]
        assert online["conditions"][condition]["retention"]["mIoU"] == pytest.approx(retention, abs=0.005)
        # calibration online: the same confidences as offline (32FC1 over DDS is exact), so the same ECE and AUROC
        for metric in ("ece", "auroc"):
            want = offline["conditions"][condition]["calibration"][metric]
            assert online["conditions"][condition]["calibration"][metric] == pytest.approx(want, abs=1e-4), metric
    assert online["bags"]["bag"]["latency_ms"]["count"] == len(records)  # end-to-end, graph included


@pytest.mark.ros
def test_timed_replay_counts_every_frame_as_matched_or_dropped(fx, tiny_cityscapes, palette_onnx, tmp_path):
    """Rate mode (as ``ros2 bag play --rate``): the evaluator has no done signal and finishes on idle_timeout;
    whatever the graph drops is reported, nothing vanishes."""
    _, records = tiny_cityscapes
    records = records * 2
    bag = tmp_path / "bag"
    write_records_bag(records, bag, read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids, rate_hz=10)
    out = tmp_path / "online"
    logs = {name: tmp_path / f"{name}.log" for name in ("seg", "eval", "player")}
    seg_args = ["-m", "vlt_perception.nodes.segmentation_node", "--ros-args", "-p", f"model_path:={palette_onnx}",
                "-r", "~/in/image:=/camera/image_raw"]
    eval_args = ["-m", "vlt_perception.nodes.evaluator_node", "--ros-args", "-p", f"out_dir:={out}",
                 "-p", "bag_name:=bag", "-p", "done_topic:=''", "-p", "idle_timeout:=2.0", "-p", "figures:=false"]
    player_args = ["-m", "vlt_perception.nodes.bag_player_node", "--ros-args", "-p", f"bag:={bag}",
                   "-p", "mode:=rate", "-p", "rate:=2.0",
                   "-p", f"wait_topics:={WAIT}"]
    with start_process(seg_args, logs["seg"]), start_process(eval_args, logs["eval"]) as evaluator, \
            start_process(player_args, logs["player"]) as player:
        assert _wait(player, 90, logs["player"]) == 0, logs["player"].read_text()
        assert _wait(evaluator, 30, logs["eval"]) == 0, logs["eval"].read_text()
    online = json.loads((out / "report.json").read_text())
    assert online["finished_by"] == "idle timeout"
    counts = online["bags"]["bag"]["counts"]
    # How many the node drops depends on the machine's load (the node keeps only the newest frame); the
    # accounting must not: every ground-truth frame is either matched or reported dropped.
    assert counts.get("matched", 0) + counts["dropped_frames"] == len(records), counts
    assert counts.get("matched", 0) >= 1, counts  # a node that publishes nothing must not pass
    assert online["bags"]["bag"]["frames"] == counts.get("matched", 0)
    assert counts.get("unmatched_predictions", 0) == 0


@pytest.mark.ros
def test_lockstep_detection_replay_agrees_with_offline(fx, tiny_cityscapes, tmp_path):
    """Detection node in the loop: the evaluator scores Detection2DArray against the bag's boxes (mAP)."""
    _, records = tiny_cityscapes
    bag = tmp_path / "bag"
    write_records_bag(records, bag, read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    model = fx.box_model(tmp_path / "det.onnx", [[0, 0, 4, 4], [10, 10, 14, 14]], [1, 0], [0.9, 0.5],
                         ["person", "car"])
    offline = evaluate_bags([bag], model, tmp_path / "offline", figures=False)
    out = tmp_path / "online"
    logs = {name: tmp_path / f"{name}.log" for name in ("det", "eval", "player")}
    result = "/detection_node/out/detections"
    det_args = ["-m", "vlt_perception.nodes.detection_node", "--ros-args", "-p", f"model_path:={model}",
                "-r", "~/in/image:=/camera/image_raw"]
    eval_args = ["-m", "vlt_perception.nodes.evaluator_node", "--ros-args", "-p", f"out_dir:={out}",
                 "-p", "bag_name:=bag", "-p", "labels_topic:=''", "-p", f"detections_topic:={result}",
                 "-p", "thing_classes:=[person, car]", "-p", "figures:=false"]
    player_args = ["-m", "vlt_perception.nodes.bag_player_node", "--ros-args", "-p", f"bag:={bag}",
                   "-p", "mode:=lockstep", "-p", f"result_topic:={result}",
                   "-p", "result_type:=vision_msgs/msg/Detection2DArray",
                   "-p", f"wait_topics:=[/camera/image_raw, /ground_truth/detections, /condition, {result}]"]
    with start_process(det_args, logs["det"]), start_process(eval_args, logs["eval"]) as evaluator, \
            start_process(player_args, logs["player"]) as player:
        assert _wait(player, 90, logs["player"]) == 0, logs["player"].read_text()
        assert _wait(evaluator, 30, logs["eval"]) == 0, logs["eval"].read_text()
    online = json.loads((out / "report.json").read_text())
    counts = online["bags"]["bag"]["counts"]
    assert counts["matched"] == len(records) and counts["dropped_frames"] == 0, counts
    for condition in ("clear", "fog"):
        want = offline["conditions"][condition]["detection"]["mAP"]
        assert online["conditions"][condition]["detection"]["mAP"] == pytest.approx(want, abs=0.005)
