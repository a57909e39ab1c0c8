"""``multitask_node``: one node for segmentation and detection, for one camera or many, one engine call per batch.

It runs segmentation, detection and multi-task (``segmentation_detection``) models: a multi-task model gives the
segmentation images and the Detection2DArray of the same frame, both with that frame's header, from one backbone
pass.

Cameras: without ``cameras`` the node has one camera and the topics of the single-task nodes: in ``~/in/image``
(or ``~/in/compressed``), out ``~/out/labels``, ``~/out/color``, ``~/out/overlay``, ``~/out/confidence`` (the
segmentation half), ``~/out/detections``, ``~/out/debug_image`` (the detection half), ``~/out/latency_ms``.
With ``cameras:=[front,left]`` each camera has them under its name: ``~/front/in/image`` ->
``~/front/out/labels``, ``~/front/out/detections``, ``~/front/out/latency_ms`` ... The node keeps the newest
frame of each camera and runs the frames of all cameras together (see
:class:`~vlt_perception.pipeline.camera_batcher.CameraBatcher` for when a batch goes: ``batch_window_ms``,
``camera_timeout_ms``). Also ``~/out/label_info`` (the classes of ``labels``; of the detections for a detection
model), ``~/out/detection_label_info`` (multi-task models: the detection classes) and ``/diagnostics`` (the node,
and one status per camera: received, processed, dropped, errors, latency).

    python -m vlt_perception.nodes.multitask_node --ros-args -p model_path:=multitask.onnx \
        -p cameras:=[front,rear] -r ~/front/in/image:=/front/image_raw -r ~/rear/in/image:=/rear/image_raw
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
from typing import Any

from vlt_perception.launch_config import MULTITASK, check_cameras
from vlt_perception.metadata import TASK_DETECTION, TASK_MULTITASK
from vlt_perception.nodes import conversions, perception_node
from vlt_perception.pipeline import serialized
from vlt_perception.pipeline.camera_batcher import CameraBatcher, CameraFrame
from vlt_perception.pipeline.detection import draw_detections
from vlt_perception.pipeline.multitask import FrameRequest, MultiTaskPipeline
from vlt_perception.pipeline.segmentation import SegmentationOutputs

_SINGLE = "camera"  # the batcher's name for the one camera of a node without `cameras`
_SEGMENTATION_IMAGES = (("labels", "mono8"), ("color", "rgb8"), ("overlay", "rgb8"), ("confidence", "32FC1"))


@dataclasses.dataclass
class _BatchJob:
    """One batch on its way through the batch, engine and publishing threads."""

    batcher: CameraBatcher  # the batcher it came from (its latency bookkeeping; a restart makes a new one)
    frames: list[CameraFrame]
    decoded: list  # (H, W, 3 uint8 RGB, header) per frame
    work: Any  # MultiTaskPipeline.prepare's batch, then MultiTaskPipeline.infer's result


class MultiTaskNode(perception_node.PerceptionNode):
    NODE = MULTITASK

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        self._prefixes: dict[str, str] = {}  # batcher camera name -> topic prefix
        self._batcher: CameraBatcher | None = None
        self._subscriptions: list = []
        self._threads: list[threading.Thread] = []
        # Three threads, one batch each: the batch thread decodes and preprocesses batch k+2 while the engine thread
        # runs batch k+1 and the publishing thread post-processes and publishes batch k. One slot between two
        # stages, so no stage runs more than one batch ahead of the next (no queue of stale frames builds up).
        self._prepared: queue.Queue = queue.Queue(maxsize=1)
        self._engine_done: queue.Queue = queue.Queue(maxsize=1)
        self._warned_batch = False
        super().__init__(node_name, **kwargs)

    # --- parameters -----------------------------------------------------------------------------------------

    def check_parameter(self, name: str, value: Any) -> str | None:
        if name == "cameras":
            return check_cameras(list(value))
        if name == "classes" and self.pipeline is not None:
            unknown = [c for c in value if c not in self.pipeline.detection_class_names]
            if unknown:
                return f"classes: unknown {unknown}; the model detects {self.pipeline.detection_class_names}"
        return None

    def apply_dynamic(self, changed: dict[str, Any]) -> None:
        if "overlay_alpha" in changed:
            self.pipeline.overlay_alpha = float(changed["overlay_alpha"])
        if self.pipeline.detects and ("score_threshold" in changed or "classes" in changed):
            self.pipeline.configure(score_threshold=changed.get("score_threshold"), classes=changed.get("classes"),
                                    keep_classes="classes" not in changed)
            self.publish_label_info()

    def _cameras(self) -> dict[str, str]:
        """Batcher camera name -> topic prefix (``~/`` for the one camera of a node without ``cameras``)."""
        cameras = list(self.param("cameras") or [])
        reason = check_cameras(cameras)
        if reason:
            raise ValueError(reason)
        return {c: f"~/{c}/" for c in cameras} if cameras else {_SINGLE: "~/"}

    # --- pipeline and outputs -------------------------------------------------------------------------------

    def make_pipeline(self, engine) -> MultiTaskPipeline:
        return MultiTaskPipeline(engine, overlay_alpha=self.param("overlay_alpha"),
                                 score_threshold=self.param("score_threshold"), classes=self.param("classes"),
                                 max_batch=self.param("max_batch"))

    def create_outputs(self) -> None:
        self._prefixes = self._cameras()
        segments, detects = self.pipeline.segments, self.pipeline.detects
        for camera, prefix in self._prefixes.items():
            if segments:
                self.add_output(f"{camera}/labels", conversions.Image, f"{prefix}out/labels")
                self.add_output(f"{camera}/color", conversions.Image, f"{prefix}out/color")
                if self.param("publish_overlay"):
                    self.add_output(f"{camera}/overlay", conversions.Image, f"{prefix}out/overlay")
                if self.param("publish_confidence"):
                    self.add_output(f"{camera}/confidence", conversions.Image, f"{prefix}out/confidence")
            if detects:
                self.add_output(f"{camera}/detections", conversions._vision_msgs().Detection2DArray,
                                f"{prefix}out/detections")
                if self.param("publish_debug_image"):
                    self.add_output(f"{camera}/debug_image", conversions.Image, f"{prefix}out/debug_image")
            if prefix != "~/":  # the single camera's is the base class's ~/out/latency_ms
                self.add_output(f"{camera}/latency", perception_node.Float64, f"{prefix}out/latency_ms")
        if self.engine.metadata.task == TASK_MULTITASK:
            self._outputs["detection_label_info"] = self.create_publisher(
                conversions._vision_msgs().LabelInfo, "~/out/detection_label_info", perception_node.LATCHED_QOS)

    def _request(self, camera: str) -> FrameRequest:
        """What somebody listens to for ``camera`` (nothing else is computed)."""
        wanted = {name: self.output(f"{camera}/{name}") is not None for name, _ in _SEGMENTATION_IMAGES}
        detect = self.output(f"{camera}/detections") is not None or self.output(f"{camera}/debug_image") is not None
        return FrameRequest(SegmentationOutputs(**wanted), detections=detect)

    def wants_output(self) -> bool:
        return any(self._request(camera).any() for camera in self._prefixes)

    def label_threshold(self) -> float:
        if self.pipeline is not None and self.engine.metadata.task == TASK_DETECTION:
            return self.pipeline.filter.score_threshold
        return 0.0

    def publish_label_info(self) -> None:
        super().publish_label_info()
        pub = self._outputs.get("detection_label_info")
        if pub is not None and self.pipeline is not None:
            header = conversions.Image().header
            header.stamp = self.get_clock().now().to_msg()
            pub.publish(conversions.label_info(self.pipeline.detection_class_names, header,
                                               self.pipeline.filter.score_threshold))

    # --- input: one subscription per camera, one batching thread ---------------------------------------------

    def _start_input(self) -> None:
        self._batcher = CameraBatcher(list(self._prefixes), self.param("batch_window_ms"),
                                      self.param("camera_timeout_ms"))
        compressed = self.param("input_type") == "compressed"
        msg_type = conversions.CompressedImage if compressed else conversions.Image
        self._decode = conversions.compressed_to_rgb if compressed else conversions.image_to_rgb
        self._max_pixels = self.param("max_pixels")
        self._serialized = self.param("serialized_messages")
        self._serialized_type = serialized.COMPRESSED_IMAGE if compressed else serialized.IMAGE
        suffix = "in/compressed" if compressed else "in/image"
        for camera, prefix in self._prefixes.items():
            self._subscriptions.append(self.create_subscription(
                msg_type, f"{prefix}{suffix}", lambda msg, camera=camera: self._on_camera_frame(camera, msg),
                perception_node.qos_profile_sensor_data, qos_overriding_options=perception_node.QOS_OVERRIDES,
                raw=self._serialized))
        self._subscription = self._subscriptions[0]  # the base class reports it (state, topic)
        self._threads = [threading.Thread(target=target, name=f"{self.get_name()}-{name}", daemon=True)
                         for name, target in (("batches", self._batch_loop), ("engine", self._engine_loop),
                                              ("publish", self._publish_loop))]
        for thread in self._threads:
            thread.start()

    def _stop_input(self) -> None:
        for sub in self._subscriptions:
            self.destroy_subscription(sub)
        self._subscriptions.clear()
        self._subscription = None
        if self._batcher is not None:
            self._batcher.stop()  # the batch thread ends and passes None down the stages: each one ends after it
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10.0)
        self._threads = []
        self._prepared = queue.Queue(maxsize=1)
        self._engine_done = queue.Queue(maxsize=1)

    def _on_camera_frame(self, camera: str, msg) -> None:
        """Executor thread: hand the frame to the batcher; never waits for the model."""
        self.stats.on_input()
        if not self._request(camera).any():
            self._idle += 1  # nobody listens to this camera: no decoding, no inference
            return
        batcher = self._batcher
        if batcher is not None and not batcher.submit(camera, msg):
            self.stats.on_dropped(1)

    def _batch_loop(self) -> None:
        """Batch thread: wait for a batch, decode and preprocess it, hand it to the engine thread."""
        batcher, handoff = self._batcher, self._prepared
        while True:
            frames = batcher.wait_batch()
            if not frames:
                handoff.put(None)  # stopped: the engine thread ends after the batches before it
                return
            try:
                job = self._prepare_batch(batcher, frames)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not end the node's worker
                self._on_error(exc)
                continue
            if job is not None:
                handoff.put(job)  # waits while the engine still has the previous batch waiting

    def _engine_loop(self) -> None:
        """Engine thread: one engine call per batch (the engine itself releases the GIL)."""
        self._stage_loop(self._prepared, self._infer_batch, self._engine_done)

    def _publish_loop(self) -> None:
        self._stage_loop(self._engine_done, self._publish_batch, None)

    def _stage_loop(self, source: queue.Queue, step, sink: queue.Queue | None) -> None:
        while True:
            job = source.get()
            if job is None:
                if sink is not None:
                    sink.put(None)
                return
            try:
                done = step(job)
            except Exception as exc:  # noqa: BLE001 - see _batch_loop
                self._on_error(exc)
                continue
            if sink is not None:
                sink.put(done)

    def _decode_frame(self, msg):
        if self._serialized:
            msg = serialized.decode(msg, self._serialized_type)  # rosbags message, same field names
        return self._decode(msg, self._max_pixels), msg.header  # H, W, 3 uint8

    def _prepare_batch(self, batcher: CameraBatcher, frames: list[CameraFrame]):
        """Decode each camera's frame (bad ones counted against their camera) and preprocess them into one batch."""
        frames, decoded, errors = batcher.decode(frames, self._decode_frame)
        for camera, exc in errors:
            self.bad_input(exc.kind if camera == _SINGLE else f"{camera}.{exc.kind}",
                           str(exc) if camera == _SINGLE else f"camera {camera}: {exc}")
        if not frames:
            return None
        requests = [self._request(frame.camera) for frame in frames]
        return _BatchJob(batcher, frames, decoded, self.pipeline.prepare([rgb for rgb, _ in decoded], requests))

    def _infer_batch(self, job: _BatchJob) -> _BatchJob:
        return dataclasses.replace(job, work=self.pipeline.infer(job.work))

    def _publish_batch(self, job: _BatchJob) -> None:
        """Publishing thread: each camera's results at its own resolution, published with its own header."""
        if self.pipeline.batch_error and not self._warned_batch:
            self._warned_batch = True
            self.get_logger().warning(f"{self.pipeline.batch_error}; running the cameras one at a time")
        result = self.pipeline.split(job.work)
        for frame, (rgb, header), out in zip(job.frames, job.decoded, result.frames):
            if self._serialized:
                header = conversions.header(*serialized.header_fields(header))
            self._publish(frame.camera, rgb, header, out)
            latency_ms = job.batcher.on_processed(frame)
            self.stats.on_processed(latency_ms, result.engine_ms)
            pub = self._outputs.get("latency" if self._prefixes[frame.camera] == "~/" else f"{frame.camera}/latency")
            if pub is not None:
                pub.publish(perception_node.Float64(data=latency_ms))

    def _publish(self, camera: str, rgb, header, out) -> None:
        if out.segmentation is not None:
            for name, encoding in _SEGMENTATION_IMAGES:
                array, pub = getattr(out.segmentation, name), self.output(f"{camera}/{name}")
                if pub is not None and array is not None:
                    pub.publish(self.image_message(array, encoding, header))
            if self.output(f"{camera}/confidence") is not None and out.segmentation.confidence is None:
                self.get_logger().warning("the model exports no 'confidence' output: the confidence topics stay "
                                          "silent", once=True)
        if out.detections is not None:
            pub = self.output(f"{camera}/detections")
            if pub is not None:
                pub.publish(conversions.detections_to_msg(out.detections, header))
            debug = self.output(f"{camera}/debug_image")
            if debug is not None:
                palette = self.engine.metadata.palette if self.engine.metadata.task == TASK_DETECTION else None
                debug.publish(self.image_message(draw_detections(rgb, out.detections, palette), "rgb8", header))

    def process_frame(self, rgb, header) -> float:  # pragma: no cover - frames go through _process_batch
        raise NotImplementedError("multitask_node processes batches")

    # --- diagnostics ------------------------------------------------------------------------------------------

    def publish_diagnostics(self) -> None:
        super().publish_diagnostics()
        pub, batcher = self._outputs.get("diagnostics"), self._batcher
        if pub is None or batcher is None or self.engine is None:
            return
        statuses = []
        for camera, prefix in self._prefixes.items():
            snap = batcher.snapshot(camera)
            level = conversions.LEVEL_WARN if snap["errors"] else conversions.LEVEL_OK
            message = f"{snap['errors']} bad frames" if snap["errors"] else ("silent" if snap["silent"] else "ok")
            values = {"camera": camera if prefix != "~/" else "", "input_topic": f"{prefix}in", **snap,
                      "batches": batcher.batches, "batch_error": self.pipeline.batch_error or ""}
            statuses += conversions.diagnostics(f"{self.get_fully_qualified_name()}: camera {camera}",
                                                self.engine.info.device, values, level, message,
                                                self.get_clock().now().to_msg()).status
        msg = conversions.DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = statuses
        pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    return perception_node.main(MultiTaskNode, args)


if __name__ == "__main__":
    sys.exit(main())
