"""Command-line tools of vlt_perception that run without ROS (bag evaluation, dataset to bag)."""
