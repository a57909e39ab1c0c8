"""Thin rclpy nodes over the pipelines: ``segmentation_node`` and ``detection_node``.

Nothing is imported here, so that ``import vlt_perception.nodes`` works without ROS; the node modules import
rclpy and tell what to install when it is missing. See docs/nodes.md for topics, parameters and QoS.
"""
