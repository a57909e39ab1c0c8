"""Replay evaluation: bag player -> segmentation node -> evaluator, report in ``out``.

    ros2 launch vlt_perception replay_eval.launch.py bag:=bags/acdc_fog model:=model.onnx \
        [mode:=lockstep|realtime|rate] [rate:=1.0] [out:=replay_report] [compressed:=false] [engine:=auto]
        [calibration:=true]

Everything decided here comes from ``vlt_perception.bag.replay.replay_eval_nodes`` (plain Python, tested);
this file only turns it into launch_ros actions. Bad arguments, a model or a bag that does not exist fail the
launch before anything starts. The evaluator's exit ends the launch (non-zero when the evaluation failed or was
incomplete); the segmentation node or the player dying ends it at once, non-zero, with a one-line reason.
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
    "calibration": ("true", "the node publishes its confidence and the report adds ECE / AUROC / FPR95; false for a "
                    "model without a confidence output"),
    "fastdds_profile": ("", "Fast DDS profile for the three nodes: empty = the packaged large-image profile unless "
                        "FASTDDS_DEFAULT_PROFILES_FILE is set; a path; none = leave the middleware alone"),
}


def _on_exit(launch, event, context):
    """A process of the job ended: the evaluator's exit ends the launch with its outcome; the segmentation node
    or the player ending while the launch still runs fails it at once, with a one-line reason (else the player
    would wait out its start-up timeout and the evaluator would wait forever)."""
    from vlt_perception.bag.replay import evaluation_finished
    from vlt_perception.launch_config import process_exited

    if launch.ends_launch:
        return [EmitEvent(event=Shutdown(reason=evaluation_finished(event.returncode)))]
    process_exited(launch, event.returncode, shutting_down=bool(getattr(context, "is_shutdown", False)))
    return None


def _nodes(context):
    from vlt_perception.bag.replay import replay_eval_nodes

    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    actions = []
    for n in replay_eval_nodes(**values):
        node = Node(package=n.package, executable=n.executable, name=n.name, namespace=n.namespace,
                    parameters=n.parameters, remappings=n.remappings, additional_env=n.env, output="screen")
        actions.append(node)
        if n.ends_launch or n.exit_fails_launch != "never":
            actions.append(RegisterEventHandler(OnProcessExit(
                target_action=node, on_exit=lambda event, ctx, n=n: _on_exit(n, event, ctx))))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()] + [OpaqueFunction(function=_nodes)]
    )
