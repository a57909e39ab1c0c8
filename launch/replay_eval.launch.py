"""Replay evaluation: bag player -> segmentation node -> evaluator, report in ``out``.

    ros2 launch vlt_perception replay_eval.launch.py bag:=bags/acdc_fog model:=model.onnx \
        [mode:=lockstep|realtime|rate] [rate:=1.0] [out:=replay_report] [compressed:=false] [engine:=auto]

Everything decided here comes from ``vlt_perception.bag.replay.replay_eval_nodes`` (plain Python, tested);
this file only turns it into launch_ros actions.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = {
    "bag": ("", "rosbag2 folder / .mcap / .db3 made by dataset_to_bag (or recorded, with ground truth topics)"),
    "model": ("", ".onnx, TensorRT engine or checkpoint folder"),
    "mode": ("lockstep", "lockstep | realtime | rate"),
    "rate": ("1.0", "speed factor for mode rate"),
    "out": ("replay_report", "report folder"),
    "compressed": ("false", "the bag's camera is CompressedImage on <image>/compressed"),
    "namespace": ("", "namespace of all three nodes"),
    "engine": ("", "override the node's engine parameter"),
}


def _nodes(context):
    from vlt_perception.bag.replay import replay_eval_nodes

    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    return [Node(package=n.package, executable=n.executable, name=n.name, namespace=n.namespace,
                 parameters=n.parameters, remappings=n.remappings, output="screen")
            for n in replay_eval_nodes(**values)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()] + [OpaqueFunction(function=_nodes)]
    )
