"""Pre/post-processing and pipelines between camera images and inference engines (numpy + OpenCV, no torch)."""
