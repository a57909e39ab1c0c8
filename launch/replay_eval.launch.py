"""Replay evaluation: bag player -> segmentation node -> evaluator, report in ``out``.

    ros2 launch vlt_perception replay_eval.launch.py bag:=bags/acdc_fog model:=model.onnx \
        [mode:=lockstep|realtime|rate] [rate:=1.0] [out:=replay_report] [compressed:=false] [engine:=auto]

Everything decided here comes from ``vlt_perception.bag.replay.replay_eval_nodes`` (plain Python, tested);
this file only turns it into launch_ros actions.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
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
    "fastdds_profile": ("", "Fast DDS profile for the three nodes: empty = the packaged large-image profile unless "
                        "FASTDDS_DEFAULT_PROFILES_FILE is set; a path; none = leave the middleware alone"),
}


def _end_launch(event, context):
    from vlt_perception.bag.replay import evaluation_finished

    return [EmitEvent(event=Shutdown(reason=evaluation_finished(event.returncode)))]


def _nodes(context):
    from vlt_perception.bag.replay import replay_eval_nodes

    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    actions = []
    for n in replay_eval_nodes(**values):
        node = Node(package=n.package, executable=n.executable, name=n.name, namespace=n.namespace,
                    parameters=n.parameters, remappings=n.remappings, additional_env=n.env, output="screen")
        actions.append(node)
        if n.ends_launch:  # the evaluator: its exit ends the launch (the segmentation node would run forever)
            actions.append(RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_end_launch)))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()] + [OpaqueFunction(function=_nodes)]
    )
