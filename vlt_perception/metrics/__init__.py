"""Metrics shared by ``vlt_training`` evaluation and the rosbag evaluator (one implementation, numpy only)."""
