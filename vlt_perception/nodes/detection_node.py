"""``detection_node``: camera image -> vision_msgs/Detection2DArray (boxes in input pixels) + optional debug image.

Topics (private, remap at launch): in ``~/in/image`` or ``~/in/compressed`` by ``input_type``; out
``~/out/detections`` (vision_msgs/Detection2DArray), ``~/out/debug_image`` (rgb8 with boxes, with
``publish_debug_image``), ``~/out/label_info`` (vision_msgs/LabelInfo, transient local: class id -> name and the
score threshold), ``~/out/latency_ms`` and ``/diagnostics``.

Each Detection2D has ``bbox.center.position.x/y`` and ``size_x/size_y`` in pixels of the input image and one
ObjectHypothesisWithPose whose ``hypothesis.class_id`` is the class NAME (e.g. "car") and ``hypothesis.score``
the score. ``score_threshold`` and ``classes`` can change while the node runs (``ros2 param set``).
"""

from __future__ import annotations

import sys
from typing import Any

from vlt_perception.launch_config import DETECTION
from vlt_perception.nodes import conversions, perception_node
from vlt_perception.pipeline.detection import DetectionPipeline, draw_detections


class DetectionNode(perception_node.PerceptionNode):
    NODE = DETECTION

    def make_pipeline(self, engine) -> DetectionPipeline:
        return DetectionPipeline(engine, score_threshold=self.param("score_threshold"),
                                 classes=self.param("classes"))

    def create_outputs(self) -> None:
        self.add_output("detections", conversions._vision_msgs().Detection2DArray, "~/out/detections")
        if self.param("publish_debug_image"):
            self.add_output("debug_image", conversions.Image, "~/out/debug_image")

    def wants_output(self) -> bool:
        return self.output("detections") is not None or self.output("debug_image") is not None

    def check_parameter(self, name: str, value: Any) -> str | None:
        if name == "classes" and self.pipeline is not None:
            unknown = [c for c in value if c not in self.pipeline.class_names]
            if unknown:
                return f"classes: unknown {unknown}; the model has {self.pipeline.class_names}"
        return None

    def apply_dynamic(self, changed: dict[str, Any]) -> None:
        self.pipeline.configure(score_threshold=changed.get("score_threshold"), classes=changed.get("classes"),
                                keep_classes="classes" not in changed)
        flt = self.pipeline.filter
        self.get_logger().info(f"filter: score >= {flt.score_threshold}, classes "
                               f"{'all' if flt.class_ids is None else sorted(flt.class_ids)}")
        self.publish_label_info()

    def label_threshold(self) -> float:
        return self.pipeline.filter.score_threshold if self.pipeline is not None else 0.0

    def process_frame(self, rgb, header) -> float:
        detections = self.pipeline.process(rgb)
        pub = self.output("detections")
        if pub is not None:
            pub.publish(conversions.detections_to_msg(detections, header))
        debug = self.output("debug_image")
        if debug is not None:
            image = draw_detections(rgb, detections, self.engine.metadata.palette)
            debug.publish(self.image_message(image, "rgb8", header))
        return detections.engine_ms


def main(args: list[str] | None = None) -> int:
    return perception_node.main(DetectionNode, args)


if __name__ == "__main__":
    sys.exit(main())
