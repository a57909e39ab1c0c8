"""Start the perception nodes: ``ros2 launch vlt_perception perception.launch.py seg_model:=model.onnx``.

Arguments (see ``vlt_perception.launch_config.LAUNCH_ARGUMENTS``): nodes (segmentation | detection | both),
seg_model, det_model, camera_topic, compressed, namespace, params_file, engine, fastdds_profile, cameras (one
multitask_node for a camera list, e.g. ``cameras:=[front,left,right,rear]``), model. What they turn into is decided by
:func:`vlt_perception.launch_config.perception_nodes` (plain, tested Python); this file only wraps it in
``launch_ros`` actions. ``launch`` is imported inside the functions so that the module loads without it.
"""

from vlt_perception.launch_config import LAUNCH_ARGUMENTS, perception_nodes


def _nodes(context, *args, **kwargs):
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    return [Node(package=n.package, executable=n.executable, name=n.name, namespace=n.namespace,
                 parameters=n.parameters, remappings=n.remappings, additional_env=n.env, output="screen")
            for n in perception_nodes(**values)]


def generate_launch_description():
    try:
        from launch import LaunchDescription
        from launch.actions import DeclareLaunchArgument, OpaqueFunction
    except ImportError as exc:
        raise ImportError("perception.launch.py needs ROS 2 launch and launch_ros (part of a ROS 2 distribution; "
                          "not installable from PyPI)") from exc
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
