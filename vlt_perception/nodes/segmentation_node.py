"""``segmentation_node``: camera image -> semantic labels (mono8), colour (rgb8), overlay, confidence (32FC1).

Topics (private, remap at launch): in ``~/in/image`` (sensor_msgs/Image) or ``~/in/compressed``
(sensor_msgs/CompressedImage) by ``input_type``; out ``~/out/labels`` (mono8 train ids, 255 = ignore),
``~/out/color`` (rgb8), ``~/out/overlay`` (rgb8, with ``publish_overlay``), ``~/out/confidence`` (32FC1, with
``publish_confidence``), ``~/out/label_info`` (vision_msgs/LabelInfo, transient local), ``~/out/latency_ms``
(std_msgs/Float64) and ``/diagnostics``. Every image output carries the input header unchanged; an output
nobody subscribes to is not computed.

    python -m vlt_perception.nodes.segmentation_node --ros-args -p model_path:=model.onnx \
        -r ~/in/image:=/camera/image_raw
"""

from __future__ import annotations

import sys
from typing import Any

from vlt_perception.launch_config import SEGMENTATION
from vlt_perception.nodes import conversions, perception_node
from vlt_perception.pipeline.segmentation import SegmentationOutputs, SegmentationPipeline


class SegmentationNode(perception_node.PerceptionNode):
    NODE = SEGMENTATION

    def make_pipeline(self, engine) -> SegmentationPipeline:
        return SegmentationPipeline(engine, overlay_alpha=self.param("overlay_alpha"))

    def create_outputs(self) -> None:
        self.add_output("labels", conversions.Image, "~/out/labels")
        self.add_output("color", conversions.Image, "~/out/color")
        if self.param("publish_overlay"):
            self.add_output("overlay", conversions.Image, "~/out/overlay")
        if self.param("publish_confidence"):
            self.add_output("confidence", conversions.Image, "~/out/confidence")

    def _wanted(self) -> dict[str, Any]:
        return {name: self.output(name) for name in ("labels", "color", "overlay", "confidence")}

    def wants_output(self) -> bool:
        return any(self._wanted().values())

    def apply_dynamic(self, changed: dict[str, Any]) -> None:
        if "overlay_alpha" in changed:
            self.pipeline.overlay_alpha = float(changed["overlay_alpha"])

    def process_frame(self, rgb, header) -> float:
        pubs = self._wanted()
        outputs = SegmentationOutputs(**{name: pub is not None for name, pub in pubs.items()})
        result = self.pipeline.process(rgb, outputs)
        for name, encoding in (("labels", "mono8"), ("color", "rgb8"), ("overlay", "rgb8"),
                               ("confidence", "32FC1")):
            array = getattr(result, name)
            if pubs[name] is not None and array is not None:
                pubs[name].publish(self.image_message(array, encoding, header))
        if pubs["confidence"] is not None and result.confidence is None:
            self.get_logger().warning("the model exports no 'confidence' output: ~/out/confidence stays silent",
                                      once=True)
        return result.engine_ms


def main(args: list[str] | None = None) -> int:
    return perception_node.main(SegmentationNode, args)


if __name__ == "__main__":
    sys.exit(main())
