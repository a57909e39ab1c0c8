"""Topic names and message types of evaluation bags (one place, used by writer, reader, player and evaluator)."""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
STRING_TYPE = "std_msgs/msg/String"
LABEL_INFO_TYPE = "vision_msgs/msg/LabelInfo"

# Keys of the bag's metadata.yaml ``custom_data`` (rosbag2 >= version 6).
CUSTOM_DATA_PREFIX = "vlt_perception."


@dataclass(frozen=True)
class BagTopics:
    """Topics of an evaluation bag. The compressed image topic follows image_transport's ``<image>/compressed``."""

    image: str = "/camera/image_raw"
    labels: str = "/ground_truth/labels"
    detections: str = "/ground_truth/detections"
    condition: str = "/condition"

    @property
    def compressed_image(self) -> str:
        return self.image.rstrip("/") + "/compressed"
