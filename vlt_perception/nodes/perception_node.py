"""The lifecycle base node of the perception nodes: parameters, lifecycle, input subscription, worker, diagnostics.

A subclass sets ``NODE`` (its parameter table and ``config/<NODE>.yaml``) and provides the pipeline and its outputs
(:meth:`PerceptionNode.make_pipeline`, ``create_outputs``, ``wants_output``, ``process_frame``); its executable's
``main`` is ``perception_node.main(NodeClass, args)``, which runs it with :func:`.runner.run_node`.

Lifecycle (``rclpy.lifecycle``): *configure* loads the engine and creates the publishers, *activate* subscribes
to the camera and starts the latest-frame worker, *deactivate* unsubscribes and stops it, *cleanup* frees the
engine. With ``autostart`` (default true) ``serve`` runs configure + activate at start-up and exits non-zero when
configure fails (missing or corrupt model); with ``autostart:=false`` the node waits for transitions on
``~/change_state`` (lifecycle_msgs/srv/ChangeState).

Threads: the executor thread runs the subscription callback, which only stamps the frame and hands it to a
:class:`LatestFrameWorker` (never blocks on the model); the worker thread decodes, runs the pipeline and publishes.
"""

from __future__ import annotations

import sys
import time
from typing import Any

try:
    from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import (DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data)
    from rclpy.qos_overriding_options import QoSOverridingOptions
    from std_msgs.msg import Float64
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise ImportError("the perception nodes need rclpy: source a ROS 2 distribution, or pip install -r "
                      "requirements/ros.txt and `source tools/env.sh`") from exc

from vlt_perception.launch_config import ConfigError, ParamSpec
from vlt_perception.nodes import conversions, parameters
from vlt_perception.nodes.runner import run_node, spin_until_shutdown
from vlt_perception.pipeline import serialized
from vlt_perception.pipeline.image_codec import ImageDecodeError
from vlt_perception.pipeline.latest_frame import LatestFrameWorker
from vlt_perception.pipeline.malloc_tuning import keep_large_buffers_in_heap
from vlt_perception.pipeline.stats import ErrorThrottle, PipelineStats

# Camera input: sensor data (best effort, keep last 1). Outputs: reliable keep-last-1, which both reliable and
# best-effort subscribers accept. Both overridable with qos_overrides.<topic>.<publisher|subscription>.<policy>.
OUTPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
QOS_OVERRIDES = QoSOverridingOptions.with_default_policies()


# A log line quotes at most this much of an error text (which may carry strings from the wire).
_MAX_LOG_TEXT = 400


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_LOG_TEXT else f"{text[:_MAX_LOG_TEXT]}... ({len(text)} characters)"


def descriptor(spec: ParamSpec):
    """A ParameterDescriptor from the spec table (see :func:`vlt_perception.nodes.parameters.descriptor`)."""
    return parameters.descriptor(spec)


class PerceptionNode(LifecycleNode):
    """Base class of the segmentation and detection nodes; subclasses build the pipeline and the outputs."""

    NODE: str = ""  # key of launch_config.NODE_PARAMS and config/<NODE>.yaml

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name or self.NODE, **kwargs)
        keep_large_buffers_in_heap()  # before the first frame: 1080p buffers without fresh page faults each time
        self.stats = PipelineStats()
        self.throttle = ErrorThrottle(period_s=5.0)
        self.engine = None
        self.pipeline = None
        self._worker: LatestFrameWorker | None = None
        self._subscription = None
        self._outputs: dict[str, Any] = {}
        self._timer = None
        self._throttle_timer = None
        self._errors_reported = 0
        self._idle = 0
        self._serialized = False  # serialized_messages, read at activate
        self._serialized_type = serialized.IMAGE
        self.configure_error = ""
        # Unknown keys and bad values from the command line / params files: ConfigError naming the file.
        self.specs = parameters.declare_table(self, self.NODE, check=self.check_parameter)
        self.add_post_set_parameters_callback(self._after_set_parameters)

    # --- parameters ---------------------------------------------------------------------------------------------

    def param(self, name: str) -> Any:
        return parameters.value(self, name, self.specs.get(name))

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        changed = {p.name: p.value for p in params if p.name in self.specs and self.specs[p.name].dynamic}
        if changed and self.pipeline is not None:
            self.apply_dynamic(changed)

    def check_parameter(self, name: str, value: Any) -> str | None:
        """Node-specific validation beyond the spec table (e.g. class names known to the model)."""
        return None

    def apply_dynamic(self, changed: dict[str, Any]) -> None:
        """Apply dynamic parameters that changed while the pipeline exists."""

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.engine = self._load_engine()
            self.pipeline = self.make_pipeline(self.engine)
            if self.param("warmup"):
                self.engine.warmup()
            self._create_publishers()
        except Exception as exc:  # noqa: BLE001 - any load failure must end in a clear FAILURE, not a traceback
            # (rclpy turns exceptions in transition callbacks into a silent ERROR: say what happened here).
            self.configure_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"configure failed: {self.configure_error}")
            self.close()
            return TransitionCallbackReturn.FAILURE
        info = self.engine.info
        self.get_logger().info(f"loaded {info.model_path}: {info.engine} {info.precision} on {info.device} "
                               f"{info.providers}; {len(self.engine.metadata.class_names)} classes, input "
                               f"{self.engine.metadata.input_width}x{self.engine.metadata.input_height}")
        return TransitionCallbackReturn.SUCCESS

    def _create_publishers(self) -> None:
        self.create_outputs()
        self._outputs["latency"] = self.create_publisher(Float64, "~/out/latency_ms", OUTPUT_QOS,
                                                         qos_overriding_options=QOS_OVERRIDES)
        self._outputs["label_info"] = self.create_publisher(conversions._vision_msgs().LabelInfo,
                                                            "~/out/label_info", LATCHED_QOS)
        self._outputs["diagnostics"] = self.create_publisher(conversions.DiagnosticArray, "/diagnostics", 10)
        self._timer = self.create_timer(self.param("diagnostics_period"), self.publish_diagnostics)
        self._throttle_timer = self.create_timer(1.0, self.report_suppressed_errors)

    def _load_engine(self):
        from vlt_perception.engines import create_engine

        model_path = self.param("model_path")
        if not model_path:
            raise ConfigError("model_path is empty: pass -p model_path:=/path/to/model.onnx")
        engine = create_engine(model_path, self.param("engine"), precision=self.param("precision") or None,
                               providers=self.param("providers") or None, require_gpu=self.param("require_gpu"),
                               threads=self.param("threads") or None, spin_wait=self.param("spin_wait"))
        if self.param("min_inference_ms") > 0:
            from vlt_perception.engines.base import PacedEngine

            engine = PacedEngine(engine, self.param("min_inference_ms"))
        return engine

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._start_input()
        except Exception as exc:  # noqa: BLE001 - see on_configure
            self.get_logger().error(f"activate failed: {type(exc).__name__}: {exc}")
            self._stop_input()
            return TransitionCallbackReturn.FAILURE
        self.publish_label_info()
        self.get_logger().info(f"active: subscribed to {self._subscription.topic_name}")
        return super().on_activate(state)

    def _start_input(self) -> None:
        self._worker = LatestFrameWorker(self._process, on_drop=self.stats.on_dropped, on_error=self._on_error,
                                         name=f"{self.get_name()}-worker")
        if self.param("input_type") == "compressed":
            msg_type, topic, decode = conversions.CompressedImage, "~/in/compressed", conversions.compressed_to_rgb
        else:
            msg_type, topic, decode = conversions.Image, "~/in/image", conversions.image_to_rgb
        self._decode = decode
        self._max_pixels = self.param("max_pixels")
        self._serialized = self.param("serialized_messages")
        self._serialized_type = serialized.COMPRESSED_IMAGE if msg_type is conversions.CompressedImage \
            else serialized.IMAGE
        self._subscription = self.create_subscription(msg_type, topic, self._on_frame, qos_profile_sensor_data,
                                                      qos_overriding_options=QOS_OVERRIDES, raw=self._serialized)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self._destroy_outputs()
        self._release_engine()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop the worker and free everything (safe in any state, also after rclpy shut down)."""
        self._stop_input()
        self.report_suppressed_errors(final=True)  # a burst the throttle still holds back is not lost
        self._destroy_outputs()
        self._release_engine()

    def _stop_input(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._worker is not None:
            self._worker.stop(timeout=10.0)
            self._worker = None

    def _destroy_outputs(self) -> None:
        for timer in (self._timer, self._throttle_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._timer = self._throttle_timer = None
        for pub in self._outputs.values():
            self.destroy_publisher(pub)
        self._outputs.clear()

    def _release_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = None
        self.pipeline = None

    # --- frames -------------------------------------------------------------------------------------------------

    def _on_frame(self, msg) -> None:
        """Executor thread: stamp and hand over; never waits for the model."""
        received = time.monotonic()
        self.stats.on_input()
        if not self.wants_output():
            self._idle += 1  # nobody listens: no decoding, no inference
            return
        worker = self._worker
        if worker is not None:
            worker.submit((msg, received))

    def _process(self, item) -> None:
        """Worker thread: decode, run the pipeline, publish."""
        msg, received = item
        try:
            if self._serialized:
                msg = serialized.decode(msg, self._serialized_type)  # rosbags message, same field names
            rgb = self._decode(msg, self._max_pixels)  # H, W, 3 uint8
        except ImageDecodeError as exc:
            self.bad_input(exc.kind, str(exc))
            return
        header = conversions.header(*serialized.header_fields(msg.header)) if self._serialized else msg.header
        engine_ms = self.process_frame(rgb, header)
        latency_ms = (time.monotonic() - received) * 1e3
        self.stats.on_processed(latency_ms, engine_ms)
        pub = self._outputs.get("latency")
        if pub is not None:
            pub.publish(Float64(data=latency_ms))

    def image_message(self, data, encoding: str, header):
        """An output image for ``Publisher.publish``: CDR bytes (``serialized_messages``) or a sensor_msgs/Image."""
        if self._serialized:
            return serialized.encode_image(data, encoding, header)
        return conversions.array_to_image(data, encoding, header)

    def bad_input(self, kind: str, text: str) -> None:
        """Count a skipped frame; log it at most once per 5 s per kind (a burst is summed up when the window
        closes, see :meth:`report_suppressed_errors`)."""
        self.stats.on_error(kind)
        text = _cut(text)
        suppressed = self.throttle.should_log(kind, text)
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            self.get_logger().error(f"skipping frame: {text}{more}")

    def report_suppressed_errors(self, final: bool = False) -> None:
        """Log the errors the throttle held back in windows that have closed (timer callback); ``final``: all of
        them, whether or not their window has closed (the node stops)."""
        for kind, count, latest in self.throttle.flush(force=final):
            self.get_logger().error(f"skipped {count} more frame(s) of kind {kind} in the last "
                                    f"{self.throttle.period_s:g} s; latest: {latest}")

    def _on_error(self, exc: BaseException) -> None:
        self.bad_input("processing_error", f"{type(exc).__name__}: {exc}")

    def publish_diagnostics(self) -> None:
        pub = self._outputs.get("diagnostics")
        if pub is None or self.engine is None:
            return
        snap = self.stats.snapshot()
        info = self.engine.info
        values = {"state": "active" if self._subscription is not None else "inactive", "engine": info.engine,
                  "precision": info.precision, "device": info.device, "providers": info.providers,
                  "model": info.model_path, "input_topic": self._subscription.topic_name if self._subscription
                  else "", "skipped_no_subscribers": self._idle, **snap}
        new_errors = snap["errors"] - self._errors_reported
        self._errors_reported = snap["errors"]
        level = conversions.LEVEL_WARN if new_errors else conversions.LEVEL_OK
        message = f"{new_errors} bad frames since last report" if new_errors else "ok"
        pub.publish(conversions.diagnostics(f"{self.get_fully_qualified_name()}: perception", info.device, values,
                                            level, message, self.get_clock().now().to_msg()))

    def publish_label_info(self) -> None:
        pub = self._outputs.get("label_info")
        if pub is not None and self.engine is not None:
            header = conversions.Image().header
            header.stamp = self.get_clock().now().to_msg()
            pub.publish(conversions.label_info(self.engine.metadata.class_names, header, self.label_threshold()))

    def label_threshold(self) -> float:
        return 0.0

    def output(self, name: str):
        """The publisher ``name`` if it exists and somebody subscribes to it, else None."""
        pub = self._outputs.get(name)
        return pub if pub is not None and pub.get_subscription_count() > 0 else None

    def add_output(self, name: str, msg_type, topic: str) -> None:
        self._outputs[name] = self.create_publisher(msg_type, topic, OUTPUT_QOS,
                                                       qos_overriding_options=QOS_OVERRIDES)

    # --- what subclasses provide --------------------------------------------------------------------------------

    def make_pipeline(self, engine):
        """The pipeline for a loaded engine (raise to fail configure)."""
        raise NotImplementedError

    def create_outputs(self) -> None:
        """Create the output publishers with :meth:`add_output`."""
        raise NotImplementedError

    def wants_output(self) -> bool:
        """Whether any output has a subscriber (else frames are not processed)."""
        raise NotImplementedError

    def process_frame(self, rgb, header) -> float:
        """Run the pipeline on one frame and publish; returns the engine time in ms."""
        raise NotImplementedError


    # --- running (see vlt_perception.nodes.runner.run_node) --------------------------------------------------------

    def serve(self, stop) -> int:
        """With ``autostart``: configure + activate (exit 1 when either fails), then spin until shutdown."""
        if self.param("autostart"):
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                self.get_logger().fatal(f"start-up failed: {self.configure_error}")
                return 1
            if stop.requested.is_set():
                return 0
            if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                self.get_logger().fatal("activate failed")
                return 1
        if stop.requested.is_set():
            return 0
        return spin_until_shutdown(self)

    def before_exit(self, code: int) -> int:
        self.close()
        return code


def main(node_class: type[PerceptionNode], args: list[str] | None = None) -> int:
    """Run a perception node until SIGINT/SIGTERM; returns the exit code (1 when start-up fails)."""
    return run_node(node_class.NODE, node_class, args, doc=sys.modules[node_class.__module__].__doc__,
                    table=node_class.NODE)
