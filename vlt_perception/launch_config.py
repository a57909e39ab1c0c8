"""Node parameters and launch configuration of the perception nodes, as plain Python (no rclpy, no launch).

One table per node (:data:`NODE_PARAMS`: the perception nodes, the evaluator and the bag player) says what each
parameter is: type, description, whether it may change while the node runs, whether it is read-only, and its allowed
values. The default values live only in ``config/<node>.yaml``; the nodes read them from there
(:func:`load_defaults`) and declare each parameter once with a descriptor built from the table
(:func:`vlt_perception.nodes.parameters.declare_table`). ``launch/perception.launch.py`` turns
:func:`perception_nodes` into ``launch_ros`` actions; everything it decides is here, where tests can reach it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "vlt_perception"
SEGMENTATION = "segmentation_node"
DETECTION = "detection_node"
MULTITASK = "multitask_node"
EVALUATOR = "evaluator_node"
BAG_PLAYER = "bag_player_node"
NODES = (SEGMENTATION, DETECTION)  # the perception nodes perception.launch.py starts
ENGINES = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")
PRECISIONS = ("", "fp32", "fp16", "bf16", "int8")
INPUT_TYPES = ("raw", "compressed")
PLAYER_MODES = ("lockstep", "realtime", "rate")  # vlt_perception.bag.replay.MODES (a test keeps them equal)
CAMERA_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
# The largest frame a node may be told to accept: 500 Mpx (1.5 GB of RGB), far above any camera, so that a
# parameter cannot make the decoder allocate without bound.
MAX_PIXELS_LIMIT = 500_000_000
PYTHON_TYPES = {"bool": (bool,), "int": (int,), "double": (float, int), "string": (str,), "string_array": (list,)}


class ConfigError(ValueError):
    """A parameter file or launch argument is invalid; the message names the file / argument and the problem."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter. ``dynamic`` parameters apply while running; the others at the next configure.

    ``read_only``: set at start-up only (command line, params file, launch file); a SetParameters request from
    the graph is refused. The parameters that choose which model and which runtime run are read-only, so that no
    participant of the DDS domain can make a node load another file.
    """

    name: str
    type: str  # a key of PYTHON_TYPES
    description: str
    dynamic: bool = False
    read_only: bool = False
    choices: tuple = ()
    min: float | None = None
    max: float | None = None

    def check(self, value: Any, from_file: bool = False) -> str | None:
        """None when ``value`` is acceptable, else the reason (for logs and SetParametersResult).

        ``from_file``: a value as a params file or ``-p`` gives it, which ROS declares with the type it reads; a
        whole number there cannot become a double parameter (rclpy refuses INTEGER for DOUBLE at declaration).
        """
        types = PYTHON_TYPES[self.type]
        if not isinstance(value, types) or (self.type != "bool" and isinstance(value, bool)):
            return f"{self.name} must be {self.type}, got {type(value).__name__} {value!r}"
        if from_file and self.type == "double" and isinstance(value, int):
            return f"{self.name} must be double, got integer {value} (write {value}.0)"
        if self.type == "string_array" and not all(isinstance(v, str) for v in value):
            return f"{self.name} must be a list of strings, got {value!r}"
        if self.type == "double" and not math.isfinite(value):
            return f"{self.name} must be finite, got {value}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        if self.min is not None and value < self.min:
            return f"{self.name} must be >= {self.min}, got {value}"
        if self.max is not None and value > self.max:
            return f"{self.name} must be <= {self.max}, got {value}"
        return None


_COMMON = (
    ParamSpec("model_path", "string", "Model to load: .onnx, TensorRT .engine/.plan or a training checkpoint "
              "folder. Classes, palette, normalisation and input size come from its metadata.", read_only=True),
    ParamSpec("engine", "string", "Inference engine: auto picks TensorRT for .onnx when TensorRT and a GPU "
              "are present, else ONNX Runtime; openvino runs .onnx on the CPU in bf16 where the CPU has bf16 "
              "units (the fastest CPU path).", choices=ENGINES, read_only=True),
    ParamSpec("precision", "string", "Engine precision; empty = the engine's default (TensorRT fp16, torch and "
              "OpenVINO bf16 where the CPU has it, ONNX Runtime: as exported).", choices=PRECISIONS),
    ParamSpec("providers", "string_array", "ONNX Runtime execution providers in order of preference; empty = "
              "TensorRT, CUDA, CPU (what really runs is reported on /diagnostics).", read_only=True),
    ParamSpec("threads", "int", "Engine CPU threads; 0 = the engine's default.", min=0, max=256),
    ParamSpec("spin_wait", "bool", "ONNX Runtime's idle CPU threads busy-wait for work: slightly faster engine, "
              "but they hold cores the node's other threads and other processes need."),
    ParamSpec("require_gpu", "bool", "Fail at configure unless the engine really runs on a GPU."),
    ParamSpec("warmup", "bool", "Run two dummy frames at configure so the first camera frame is not slow."),
    ParamSpec("autostart", "bool", "Configure and activate at start-up (false: wait for lifecycle "
              "transitions on ~/change_state)."),
    ParamSpec("input_type", "string", "raw: subscribe sensor_msgs/Image on ~/in/image; compressed: "
              "sensor_msgs/CompressedImage (JPEG/PNG) on ~/in/compressed.", choices=INPUT_TYPES),
    ParamSpec("max_pixels", "int", "Frames with more pixels are rejected as malformed.", min=1,
              max=MAX_PIXELS_LIMIT),
    ParamSpec("serialized_messages", "bool", "Take camera images and publish output images as serialized CDR "
              "(decoded / encoded with rosbags) instead of rclpy message objects: same wire format, ~1 ms less "
              "CPU per 1080p frame each way, malformed payloads counted as bad frames."),
    ParamSpec("diagnostics_period", "double", "Seconds between /diagnostics messages.", min=0.05, max=3600.0),
    ParamSpec("min_inference_ms", "double", "Hold every inference for at least this long; 0 = off. Emulates a "
              "slower accelerator, to see frame dropping and latency on a fast machine (tests use it).",
              min=0.0, max=60000.0),
)


def _at_start(name: str, type_: str, description: str, **kwargs: Any) -> ParamSpec:
    """A parameter read once, at start-up (read-only)."""
    return ParamSpec(name, type_, description, read_only=True, **kwargs)


NODE_PARAMS: dict[str, tuple[ParamSpec, ...]] = {
    SEGMENTATION: _COMMON + (
        ParamSpec("publish_overlay", "bool", "Create ~/out/overlay (camera image blended with the colour labels)."),
        ParamSpec("publish_confidence", "bool", "Create ~/out/confidence (32FC1 max class probability), if the "
                  "model exports it."),
        ParamSpec("overlay_alpha", "double", "Weight of the colour labels in the overlay.", dynamic=True,
                  min=0.0, max=1.0),
    ),
    DETECTION: _COMMON + (
        ParamSpec("score_threshold", "double", "Keep detections with at least this score.", dynamic=True,
                  min=0.0, max=1.0),
        ParamSpec("classes", "string_array", "Class names to keep (names from the model metadata); empty = all.",
                  dynamic=True),
        ParamSpec("publish_debug_image", "bool", "Create ~/out/debug_image (rgb8 camera image with boxes)."),
    ),
    # The evaluator and the player read their parameters once, at start-up: all read-only.
    EVALUATOR: (
        _at_start("labels_topic", "string", "Predicted train-ID labels (mono8); '' = none."),
        _at_start("detections_topic", "string", "Predicted vision_msgs/Detection2DArray; '' = none."),
        _at_start("confidence_topic", "string", "Predicted per-pixel confidence (32FC1: the segmentation node's "
                  "~/out/confidence with publish_confidence); adds ECE / AUROC / FPR95 to the report; '' = none."),
        _at_start("gt_labels_topic", "string", "Ground-truth labels (mono8); '' = none."),
        _at_start("gt_detections_topic", "string", "Ground-truth Detection2DArray; '' = none."),
        _at_start("condition_topic", "string", "Latched std_msgs/String with the current condition."),
        _at_start("camera_topic", "string", "Camera input of the graph: end-to-end latency starts at its arrival "
                  "(taken as raw bytes, not decoded); '' = from the ground truth's arrival."),
        _at_start("camera_type", "string", "Message type of camera_topic.", choices=CAMERA_TYPES),
        _at_start("class_names", "string_array", "Segmentation classes (train IDs index them)."),
        _at_start("thing_classes", "string_array", "Detection classes of the model (class_id names or indices)."),
        _at_start("out_dir", "string", "Report folder (report.json, report.md, figures/)."),
        _at_start("reference_report", "string", "An offline bag_eval report.json made with --reference: "
                  "retention against its reference."),
        _at_start("bag_name", "string", "Name of this run in the report."),
        _at_start("done_topic", "string", "std_msgs/String from the player: finish when it arrives; '' = none "
                  "(then idle_timeout ends the evaluation)."),
        _at_start("done_grace", "double", "Seconds to wait for in-flight predictions after done.",
                  min=0.0, max=3600.0),
        _at_start("idle_timeout", "double", "Finish after this many seconds without messages (0 = never).",
                  min=0.0, max=86400.0),
        _at_start("exit_when_done", "bool", "Shut down after writing the report."),
        _at_start("figures", "bool", "Draw report figures."),
    ),
    BAG_PLAYER: (
        _at_start("bag", "string", "rosbag2 folder, .mcap or .db3 to play (required)."),
        _at_start("mode", "string", "lockstep: one frame at a time, each answered before the next; realtime: the "
                  "bag's spacing; rate: the bag's spacing divided by rate.", choices=PLAYER_MODES),
        _at_start("rate", "double", "Speed factor for mode rate (2.0 = twice as fast).", min=1e-3, max=1000.0),
        _at_start("result_topic", "string", "lockstep: the output whose header stamp ends a frame."),
        _at_start("result_type", "string", "Message type of result_topic."),
        _at_start("lockstep_timeout", "double", "lockstep: seconds to wait for a result before counting the frame "
                  "as dropped.", min=0.0, max=3600.0),
        _at_start("lockstep_resend", "double", "lockstep: re-publish the image after this many seconds without a "
                  "result (a node that has not yet discovered all its subscribers skips frames); 0 = never.",
                  min=0.0, max=3600.0),
        _at_start("camera_topics", "string_array", "Topics that carry the camera frames."),
        _at_start("latched_topics", "string_array", "Topics republished transient-local (late joiners get the "
                  "last)."),
        _at_start("wait_topics", "string_array", "Before playing, wait until each has a subscriber."),
        _at_start("startup_timeout", "double", "Seconds to wait for wait_topics subscribers and the result_topic "
                  "publisher.", min=0.0, max=86400.0),
        _at_start("settle_time", "double", "Seconds between the graph being seen and the first message (the "
                  "subscribers' side of discovery may lag: first frames would be lost).", min=0.0, max=60.0),
        _at_start("done_topic", "string", "Latched std_msgs/String with a JSON summary when playback ends."),
        _at_start("condition_settle", "double", "Seconds between a condition change and the next frame "
                  "(cross-topic ordering).", min=0.0, max=60.0),
    ),
}


# One node for both tasks and for many cameras: the segmentation and the detection parameters, plus the cameras.
NODE_PARAMS[MULTITASK] = NODE_PARAMS[SEGMENTATION] + NODE_PARAMS[DETECTION][len(_COMMON):] + (
    ParamSpec("cameras", "string_array", "Camera names; each camera's topics are under ~/<camera>/ (in/image -> "
              "out/labels, out/detections ...). Empty = one camera on ~/in/image, as the single-task nodes."),
    ParamSpec("batch_window_ms", "double", "How long the oldest waiting frame waits for the other cameras' frames; "
              "a batch goes as soon as every publishing camera has a frame, or when this window closes.",
              min=0.0, max=600000.0),
    ParamSpec("camera_timeout_ms", "double", "A camera that sent nothing for this long is silent: batches no "
              "longer wait for it (until its next frame).", min=1.0, max=600000.0),
    ParamSpec("max_batch", "int", "Most frames per engine call (more cameras: several calls).", min=1, max=256),
)


def specs(node: str) -> dict[str, ParamSpec]:
    if node not in NODE_PARAMS:
        raise ConfigError(f"unknown node {node!r}; expected one of {list(NODE_PARAMS)}")
    return {spec.name: spec for spec in NODE_PARAMS[node]}


def config_dir() -> Path:
    """``config/`` of the source checkout, else ``share/vlt_perception/config`` of the ament install."""
    from vlt_perception.resources import ResourceNotFound, data_path

    try:
        return data_path(PACKAGE, "config", f"{SEGMENTATION}.yaml").parent
    except ResourceNotFound as exc:
        raise ConfigError(f"cannot find the {PACKAGE} config folder: {exc}") from exc


def read_params_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """``{node key: {parameter: value}}`` of a ROS 2 parameter file (``/**`` or node-name keys)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read parameter file: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of node names to ros__parameters")
    out = {}
    for key, section in data.items():
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ConfigError(f"{path}: section {key!r} has no 'ros__parameters' mapping")
        out[str(key)] = section["ros__parameters"]
    return out


def validate_params(node: str, params: dict[str, Any], source: str) -> None:
    """Raise ConfigError naming ``source`` for unknown names or bad values."""
    table = specs(node)
    unknown = sorted(set(params) - set(table))
    if unknown:
        raise ConfigError(f"{source}: unknown {node} parameters {unknown}; known: {sorted(table)}")
    for name, value in params.items():
        reason = table[name].check(value, from_file=True)
        if reason:
            raise ConfigError(f"{source}: {reason}")


def load_defaults(node: str, path: str | Path | None = None) -> dict[str, Any]:
    """The default of every parameter of ``node``, from ``config/<node>.yaml`` (validated and complete)."""
    path = Path(path) if path else config_dir() / f"{node}.yaml"
    sections = read_params_file(path)
    params = sections.get("/**", sections.get(node))
    if params is None:
        raise ConfigError(f"{path}: no '/**' or '{node}' section")
    validate_params(node, params, str(path))
    missing = sorted(set(specs(node)) - set(params))
    if missing:
        raise ConfigError(f"{path}: no default for {missing}")
    return dict(params)


def parameter_help(node: str) -> list[tuple[str, str, str]]:
    """(name, default, description) of every parameter of ``node``, for a node's ``--help``."""
    defaults = load_defaults(node)
    return [(name, repr(defaults[name]), spec.description + (" Read-only." if spec.read_only else ""))
            for name, spec in specs(node).items()]


# --- launch ---------------------------------------------------------------------------------------------------


# ``ros2 launch vlt_perception perception.launch.py`` arguments: name -> (default, description).
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "nodes": ("segmentation", "Which nodes to start: segmentation, detection or both."),
    "seg_model": ("", "Segmentation model (.onnx / .engine / checkpoint folder)."),
    "det_model": ("", "Detection model (.onnx / .engine / checkpoint folder)."),
    "camera_topic": ("/camera/image_raw", "Camera sensor_msgs/Image topic (remapped onto ~/in/image)."),
    "compressed": ("false", "Subscribe <camera_topic>/compressed (sensor_msgs/CompressedImage) instead."),
    "namespace": ("", "Namespace of the nodes."),
    "params_file": ("", "ROS 2 parameter file overriding config/<node>.yaml."),
    "engine": ("", "Inference engine for both nodes (auto, tensorrt, onnxruntime, openvino, torch); empty = params."),
    "fastdds_profile": ("", "Fast DDS XML profile for the nodes: empty = the packaged large-image profile "
                        "(config/fastdds_large_images.xml) unless FASTDDS_DEFAULT_PROFILES_FILE is already set; "
                        "a path = that file; none = leave the middleware settings alone."),
    "cameras": ("", "Camera names, e.g. [front,left,right,rear]: one multitask_node runs every camera (one engine "
                "call per batch) and both tasks of the model, instead of nodes; camera c's topic is camera_topic "
                "with {camera} replaced by c (default /{camera}/image_raw)."),
    "model": ("", "Model of the multitask_node (multi-task, segmentation or detection); empty = seg_model, else "
              "det_model."),
}
# camera_topic when cameras are given and camera_topic is left at its default.
MULTI_CAMERA_TOPIC = "/{camera}/image_raw"
# A camera name becomes a namespace of multitask_node's topics: one ROS name token.
_CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def check_cameras(cameras: list[str]) -> str | None:
    """None when ``cameras`` is a usable camera list for multitask_node, else the reason."""
    bad = [c for c in cameras if not _CAMERA_NAME.fullmatch(c)]
    if bad:
        return f"cameras: {bad} are not valid names (letters, digits and _, starting with a letter)"
    if len(set(cameras)) != len(cameras):
        return f"cameras: names repeat in {cameras}"
    return None


def parse_cameras(text: str) -> list[str]:
    """``[front,left]``, ``front,left`` or ``['front', 'left']`` (as ros2 launch passes it) -> names; '' -> []."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    names = [n.strip().strip("'\"").strip() for n in body.split(",")] if body.strip() else []
    reason = check_cameras(names)
    if reason:
        raise ConfigError(f"launch argument {reason}")
    return names

# Fast DDS reads its default XML profile from these (the first is the current name, the second the older one).
FASTDDS_PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
LARGE_IMAGES_PROFILE = "fastdds_large_images.xml"


def middleware_env(fastdds_profile: str = "", environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables the node processes need so that camera-sized images arrive.

    With Fast DDS's built-in transports, best-effort frames above ~0.5 MB mostly never arrive between processes
    (docs/nodes.md, "Large images"); the packaged profile gives a shared-memory segment that holds whole frames.
    It is set only where the user has not chosen a profile already, and only for Fast DDS (the default RMW).
    """
    environ = dict(os.environ if environ is None else environ)
    choice = fastdds_profile.strip()
    if choice.lower() == "none":
        return {}
    rmw = environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if not rmw.startswith("rmw_fastrtps"):
        if choice:
            raise ConfigError(f"launch argument fastdds_profile: RMW_IMPLEMENTATION is {rmw}, not Fast DDS")
        return {}
    if not choice:
        if any(environ.get(name) for name in FASTDDS_PROFILE_VARIABLES):
            return {}  # the user's own profile wins
        profile = config_dir() / LARGE_IMAGES_PROFILE
    else:
        profile = Path(choice)
        if not profile.is_file():
            raise ConfigError(f"launch argument fastdds_profile: {profile} is not a file")
    return {FASTDDS_PROFILE_VARIABLES[0]: str(profile)}


@dataclass
class NodeLaunch:
    """What ``launch_ros.actions.Node`` needs for one node."""

    executable: str
    name: str
    namespace: str
    parameters: list = field(default_factory=list)  # params-file paths and dicts, in order of precedence
    remappings: list[tuple[str, str]] = field(default_factory=list)
    package: str = PACKAGE
    env: dict[str, str] = field(default_factory=dict)  # additional environment of the process
    ends_launch: bool = False  # its exit ends the whole launch (an evaluation job), with its outcome
    # Whether its exit while the launch still runs fails the launch (see process_exited): "never"; "error" (a
    # non-zero exit: a job step such as the bag player); "any" (a node the job needs until the end).
    exit_fails_launch: str = "never"


class LaunchFailed(RuntimeError):
    """Raised in a launch event handler: ``ros2 launch`` logs its message as one line ("Caught exception in
    launch") and exits non-zero, after shutting the other processes down."""


def process_exited(launch: NodeLaunch, returncode: int | None, shutting_down: bool) -> None:
    """Raise :class:`LaunchFailed` when ``launch``'s process ended while the launch still needed it.

    ``shutting_down``: the launch is already ending (Ctrl-C, or the job finished): exits are expected then.
    """
    policy = launch.exit_fails_launch
    if policy not in ("never", "error", "any"):
        raise ValueError(f"exit_fails_launch: expected never, error or any, got {policy!r}")
    if shutting_down or policy == "never" or (policy == "error" and returncode == 0):
        return
    raise LaunchFailed(f"{launch.executable} ({launch.name}) exited with code {returncode} before the job "
                       "finished; see its log above")


def parse_bool(value: str | bool, name: str) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"launch argument {name}: expected true or false, got {value!r}")


def perception_nodes(
    *,
    nodes: str = "segmentation",
    seg_model: str = "",
    det_model: str = "",
    camera_topic: str = "/camera/image_raw",
    compressed: str | bool = False,
    namespace: str = "",
    params_file: str = "",
    engine: str = "",
    fastdds_profile: str = "",
    cameras: str = "",
    model: str = "",
) -> list[NodeLaunch]:
    """The nodes to start for the launch arguments (strings as ``ros2 launch`` passes them).

    ``nodes``: ``segmentation``, ``detection``, ``both`` or a comma list. The camera topic is remapped onto
    ``~/in/image`` (or ``<camera_topic>/compressed`` onto ``~/in/compressed`` with ``compressed:=true``).
    ``params_file`` (optional, validated here) overrides the packaged defaults; ``engine`` and the model paths,
    when given, override both. ``fastdds_profile``: see :func:`middleware_env` (every node gets that environment).
    ``cameras`` (e.g. ``[front,left]``): one multitask_node for all cameras instead, see :func:`multitask_launch`.
    """
    wanted = _which_nodes(nodes)
    env = middleware_env(fastdds_profile)
    use_compressed = parse_bool(compressed, "compressed")
    if not camera_topic or camera_topic.endswith("/"):
        raise ConfigError(f"launch argument camera_topic: bad topic name {camera_topic!r}")
    if engine and engine not in ENGINES:
        raise ConfigError(f"launch argument engine: expected one of {list(ENGINES)}, got {engine!r}")
    user_params = read_params_file(params_file) if params_file else {}
    camera_names = parse_cameras(cameras)
    if camera_names:
        topic = MULTI_CAMERA_TOPIC if camera_topic == LAUNCH_ARGUMENTS["camera_topic"][0] else camera_topic
        return [multitask_launch(camera_names, model or seg_model or det_model, topic, use_compressed, namespace,
                                 params_file, user_params, engine, env)]
    remap = (("~/in/compressed", f"{camera_topic}/compressed") if use_compressed else ("~/in/image", camera_topic))
    models = {SEGMENTATION: seg_model, DETECTION: det_model}
    launches = []
    for node in wanted:
        for key, section in user_params.items():
            if key in ("/**", node) or key.endswith(f"/{node}"):
                validate_params(node, section, f"{params_file} [{key}]")
        overrides: dict[str, Any] = {"input_type": "compressed" if use_compressed else "raw"}
        if models[node]:
            overrides["model_path"] = models[node]
        if engine:
            overrides["engine"] = engine
        argument = f"{'seg' if node == SEGMENTATION else 'det'}_model"
        if overrides.get("model_path"):
            _check_model(overrides["model_path"], f"launch argument {argument}")
        elif _file_sets(user_params, node, "model_path"):
            _check_model(_file_value(user_params, node, "model_path"), f"{params_file}: {node} model_path")
        else:
            raise ConfigError(f"{node}: no model: pass {argument}:=PATH or set model_path in params_file")
        parameters: list = [str(config_dir() / f"{node}.yaml")]
        if params_file:
            parameters.append(str(params_file))
        parameters.append(overrides)
        launches.append(NodeLaunch(node, node, namespace, parameters, [remap], env=dict(env)))
    return launches



def multitask_launch(cameras: list[str], model: str, camera_topic: str, use_compressed: bool, namespace: str,
                     params_file: str, user_params: dict[str, dict[str, Any]], engine: str,
                     env: dict[str, str]) -> NodeLaunch:
    """One multitask_node for ``cameras``: camera c's ``~/c/in/image`` remapped onto ``camera_topic`` with
    ``{camera}`` replaced by c (``<topic>/compressed`` onto ``~/c/in/compressed`` with compressed images)."""
    if "{camera}" not in camera_topic and len(cameras) > 1:
        raise ConfigError(f"launch argument camera_topic: {camera_topic!r} has no {{camera}} placeholder, so "
                          f"{len(cameras)} cameras would share it; e.g. camera_topic:=/{{camera}}/image_raw")
    for key, section in user_params.items():
        if key in ("/**", MULTITASK) or key.endswith(f"/{MULTITASK}"):
            validate_params(MULTITASK, section, f"{params_file} [{key}]")
    overrides: dict[str, Any] = {"input_type": "compressed" if use_compressed else "raw", "cameras": list(cameras)}
    if model:
        overrides["model_path"] = model
    if engine:
        overrides["engine"] = engine
    if model:
        _check_model(model, "launch argument model")
    elif _file_sets(user_params, MULTITASK, "model_path"):
        _check_model(_file_value(user_params, MULTITASK, "model_path"), f"{params_file}: {MULTITASK} model_path")
    else:
        raise ConfigError(f"{MULTITASK}: no model: pass model:=PATH (or seg_model / det_model) or set model_path "
                          "in params_file")
    remappings = []
    for camera in cameras:
        topic = camera_topic.replace("{camera}", camera)
        if not topic or topic.endswith("/"):
            raise ConfigError(f"launch argument camera_topic: bad topic name {topic!r} for camera {camera}")
        remappings.append((f"~/{camera}/in/compressed", f"{topic}/compressed") if use_compressed
                          else (f"~/{camera}/in/image", topic))
    parameters: list = [str(config_dir() / f"{MULTITASK}.yaml")]
    if params_file:
        parameters.append(str(params_file))
    parameters.append(overrides)
    return NodeLaunch(MULTITASK, MULTITASK, namespace, parameters, remappings, env=dict(env))

def _which_nodes(nodes: str) -> list[str]:
    aliases = {"segmentation": SEGMENTATION, "seg": SEGMENTATION, "detection": DETECTION, "det": DETECTION}
    names = [SEGMENTATION, DETECTION] if nodes.strip() == "both" else [n.strip() for n in nodes.split(",") if
                                                                        n.strip()]
    out = []
    for name in names:
        node = aliases.get(name, name)
        if node not in NODES:
            raise ConfigError(f"launch argument nodes: unknown node {name!r}; use segmentation, detection or both")
        if node not in out:
            out.append(node)
    if not out:
        raise ConfigError("launch argument nodes: no node selected")
    return out


def _file_sets(user_params: dict[str, dict[str, Any]], node: str, name: str) -> bool:
    return any(section.get(name) for key, section in user_params.items()
               if key in ("/**", node) or key.endswith(f"/{node}"))


def _file_value(user_params: dict[str, dict[str, Any]], node: str, name: str) -> Any:
    """The value of ``name`` for ``node`` in a params file (a section naming the node wins over ``/**``)."""
    values = [section[name] for key, section in user_params.items()
              if section.get(name) and (key in ("/**", node) or key.endswith(f"/{node}"))]
    named = [section[name] for key, section in user_params.items()
             if section.get(name) and key != "/**" and (key == node or key.endswith(f"/{node}"))]
    return (named or values)[-1]


def _check_model(path: str, what: str) -> None:
    """A model that does not exist fails the launch before any process starts (the node would exit 1 at once,
    and the processes that wait for it would wait)."""
    if not Path(path).exists():
        raise ConfigError(f"{what}: {path} does not exist")
