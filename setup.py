"""ament_python build of the repository: installs the vlt_perception and vlt_training Python packages, the ROS
executables under lib/vlt_perception and lib/vlt_training, launch files, configs and the ament index markers for
both package names."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vlt_perception"
TRAINING = "vlt_training"
NODES = {
    "segmentation_node": "vlt_perception.nodes.segmentation_node:main",
    "detection_node": "vlt_perception.nodes.detection_node:main",
    "multitask_node": "vlt_perception.nodes.multitask_node:main",
    "dataset_to_bag": "vlt_perception.cli.dataset_to_bag:main",
    "bag_eval": "vlt_perception.cli.bag_eval:main",
    "evaluator_node": "vlt_perception.nodes.evaluator_node:main",
    "bag_player_node": "vlt_perception.nodes.bag_player_node:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", TRAINING, f"{TRAINING}.*"]),
    # Data read through the package itself (open_clip model configs, shipped pretrained towers).
    package_data={TRAINING: ["modeling/backbone/model_configs/*.json", "pretrained/*/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}", f"resource/{TRAINING}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{TRAINING}", [f"resource/{TRAINING}_share/package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{TRAINING}/config/train", glob("config/train/*.yaml")),
        (f"share/{TRAINING}/config/pretrain", glob("config/pretrain/*.yaml")),
        (f"share/{PACKAGE}/interfaces/vision_msgs/msg", glob("interfaces/vision_msgs/msg/*.msg")),
        # `ros2 run vlt_training <verb>` looks in lib/vlt_training.
        (f"lib/{TRAINING}", sorted(glob(f"scripts/{TRAINING}/*"))),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="vlt_perception maintainers",
    maintainer_email="vlt-perception@example.com",
    description="CLIP/EVA-CLIP domain-generalised segmentation and detection for ROS 2 (VLTSeg, VLTDet)",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in NODES.items()]},
)
