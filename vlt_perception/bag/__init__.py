"""Rosbag2 tools without ROS: dataset -> bag, offline and online evaluation under domain shift, reports.

Nothing here imports rclpy; the nodes in ``vlt_perception.nodes`` (``bag_player_node``, ``evaluator_node``) are thin
glue over :mod:`vlt_perception.bag.matching` and :mod:`vlt_perception.bag.report`, which the offline evaluator
(:mod:`vlt_perception.bag.offline`) uses too, so online and offline numbers come from the same code.
"""


class BagError(RuntimeError):
    """A bag could not be written or read; the message names the bag and the problem."""


from vlt_perception.bag.topics import BagTopics  # noqa: E402  (BagError first: submodules import it)

__all__ = ["BagError", "BagTopics"]
