"""Node parameter table, YAML defaults and the launch configuration (plain Python, no ROS needed)."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

from vlt_perception import launch_config as lc
from vlt_perception.launch_config import ConfigError, perception_nodes

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("m", "m.onnx", "s.onnx", "d.onnx", "seg.onnx", "det.onnx")


@pytest.fixture(autouse=True)
def models_here(tmp_path, monkeypatch):
    """The launch configuration checks that model paths exist: the tests run where these model files are."""
    for name in MODELS:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("node", lc.NODES)
def test_packaged_defaults_cover_every_parameter_and_are_valid(node):
    defaults = lc.load_defaults(node)
    assert set(defaults) == set(lc.specs(node))
    for name, value in defaults.items():
        assert lc.specs(node)[name].check(value) is None, name


def _write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_file_errors_name_the_file(tmp_path):
    full = (ROOT / "config" / "segmentation_node.yaml").read_text()
    missing = _write(tmp_path, full.replace("    overlay_alpha: 0.5\n", ""), "missing.yaml")
    with pytest.raises(ConfigError, match=r"missing\.yaml: no default for \['overlay_alpha'\]"):
        lc.load_defaults("segmentation_node", missing)
    unknown = _write(tmp_path, full + "    colour_mode: 3\n", "unknown.yaml")
    with pytest.raises(ConfigError, match=r"unknown\.yaml: unknown segmentation_node parameters \['colour_mode'\]"):
        lc.load_defaults("segmentation_node", unknown)
    bad = _write(tmp_path, full.replace("overlay_alpha: 0.5", "overlay_alpha: 3.0"), "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml: overlay_alpha must be <= 1.0"):
        lc.load_defaults("segmentation_node", bad)
    broken = _write(tmp_path, "/**: [unclosed", "broken.yaml")
    with pytest.raises(ConfigError, match=r"broken\.yaml: cannot read"):
        lc.load_defaults("segmentation_node", broken)
    flat = _write(tmp_path, "model_path: x\n", "flat.yaml")
    with pytest.raises(ConfigError, match="ros__parameters"):
        lc.load_defaults("segmentation_node", flat)


@pytest.mark.parametrize(
    "name, value, problem",
    [
        ("engine", "bogus", "one of"),
        ("engine", 3, "must be string"),
        ("threads", -1, ">= 0"),
        ("threads", True, "must be int"),
        ("score_threshold", 1.5, "<= 1.0"),
        ("score_threshold", float("nan"), "finite"),
        ("classes", "car", "must be string_array"),
        ("classes", ["car", 3], "list of strings"),
        ("autostart", "yes", "must be bool"),
    ],
)
def test_param_spec_rejects_bad_values(name, value, problem):
    reason = lc.specs("detection_node")[name].check(value)
    assert reason is not None and problem in reason and name in reason


def test_param_spec_accepts_good_values():
    table = lc.specs("detection_node")
    assert table["score_threshold"].check(1) is None  # ints are fine for doubles
    assert table["classes"].check(["car", "bus"]) is None
    assert table["engine"].check("onnxruntime") is None


def test_both_nodes_with_models_and_remapping():
    seg, det = perception_nodes(nodes="both", seg_model="seg.onnx", det_model="det.onnx",
                                camera_topic="/cam/front/image", namespace="car1", engine="onnxruntime")
    assert (seg.executable, det.executable) == ("segmentation_node", "detection_node")
    assert seg.namespace == det.namespace == "car1"
    assert seg.remappings == [("~/in/image", "/cam/front/image")]
    assert seg.parameters[0] == str(ROOT / "config" / "segmentation_node.yaml")
    assert seg.parameters[-1] == {"input_type": "raw", "model_path": "seg.onnx", "engine": "onnxruntime"}
    assert det.parameters[-1]["model_path"] == "det.onnx"


def test_compressed_input_remaps_the_compressed_topic():
    (seg,) = perception_nodes(seg_model="m.onnx", camera_topic="/cam", compressed="true")
    assert seg.remappings == [("~/in/compressed", "/cam/compressed")]
    assert seg.parameters[-1]["input_type"] == "compressed"


def test_params_file_is_validated_and_may_carry_the_model(tmp_path):
    good = _write(tmp_path, "/**:\n  ros__parameters:\n    model_path: det.onnx\n    score_threshold: 0.5\n")
    (det,) = perception_nodes(nodes="detection", params_file=str(good))
    assert det.parameters == [str(ROOT / "config" / "detection_node.yaml"), str(good), {"input_type": "raw"}]
    bad = _write(tmp_path, "detection_node:\n  ros__parameters:\n    score_threshold: 2.0\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad\.yaml \[detection_node\]: score_threshold must be <= 1.0"):
        perception_nodes(nodes="det", det_model="m.onnx", params_file=str(bad))


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"nodes": "tracking", "seg_model": "m"}, "unknown node 'tracking'"),
        ({"nodes": " , "}, "no node selected"),
        ({"nodes": "segmentation"}, "no model"),
        ({"nodes": "both", "seg_model": "m"}, "detection_node: no model"),
        ({"seg_model": "m", "engine": "tflite"}, "launch argument engine"),
        ({"seg_model": "m", "compressed": "maybe"}, "launch argument compressed"),
        ({"seg_model": "m", "camera_topic": ""}, "camera_topic"),
    ],
)
def test_bad_launch_arguments(kwargs, problem):
    with pytest.raises(ConfigError, match=problem):
        perception_nodes(**kwargs)


def test_launch_arguments_match_perception_nodes():
    assert set(lc.LAUNCH_ARGUMENTS) == set(inspect.signature(perception_nodes).parameters)


def _load_launch_file():
    spec = importlib.util.spec_from_file_location("perception_launch", ROOT / "launch" / "perception.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not need `launch`
    return module


def test_launch_file_builds_nodes_from_launch_config(monkeypatch):
    """launch / launch_ros are not installable here: stand-ins record what the launch file hands them."""
    from helpers.fake_launch import load_launch_file

    module, _ = load_launch_file(monkeypatch, ROOT / "launch" / "perception.launch.py")
    description = module.generate_launch_description()
    declared = {e.args[0]: e.kwargs["default_value"] for e in description if "default_value" in e.kwargs}
    assert declared == {name: default for name, (default, _) in lc.LAUNCH_ARGUMENTS.items()}
    opaque = description[-1].kwargs["function"]
    context = {name: default for name, (default, _) in lc.LAUNCH_ARGUMENTS.items()}
    context.update(nodes="both", seg_model="s.onnx", det_model="d.onnx", namespace="ns")
    nodes = opaque(context)
    expected = perception_nodes(**context)
    assert [n.kwargs["executable"] for n in nodes] == ["segmentation_node", "detection_node"]
    for node, want in zip(nodes, expected):
        assert node.kwargs["parameters"] == want.parameters
        assert node.kwargs["remappings"] == want.remappings
        assert node.kwargs["namespace"] == "ns" and node.kwargs["package"] == "vlt_perception"
        assert node.kwargs["additional_env"] == want.env


def _has_ros_launch() -> bool:
    # The repository's own launch/ folder imports as an empty namespace package named "launch": ask for the API.
    try:
        from launch import LaunchDescription  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_has_ros_launch(), reason="ROS 2 launch is installed")
def test_launch_file_without_launch_says_what_is_missing():
    module = _load_launch_file()
    with pytest.raises(ImportError, match="launch_ros"):
        module.generate_launch_description()


def test_docs_list_every_parameter():
    docs = (ROOT / "docs" / "nodes.md").read_text()
    for node in lc.NODES:
        for name in lc.specs(node):
            assert f"| `{name}` |" in docs, f"docs/nodes.md has no row for {node} parameter {name}"


@pytest.fixture
def no_profile_env(monkeypatch):
    for name in (*lc.FASTDDS_PROFILE_VARIABLES, "RMW_IMPLEMENTATION"):
        monkeypatch.delenv(name, raising=False)


def test_large_image_profile_reaches_every_node_unless_the_user_chose_one(no_profile_env, monkeypatch, tmp_path):
    seg, det = perception_nodes(nodes="both", seg_model="s.onnx", det_model="d.onnx")
    profile = Path(seg.env["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert profile.name == "fastdds_large_images.xml" and profile.is_file() and det.env == seg.env
    assert "<segment_size>" in profile.read_text()  # a shared-memory segment that holds whole frames
    # the user's own profile wins; `none` leaves the middleware alone; another RMW is left alone too
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/etc/my_profile.xml")
    assert perception_nodes(seg_model="s.onnx")[0].env == {}
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE")
    assert perception_nodes(seg_model="s.onnx", fastdds_profile="none")[0].env == {}
    own = tmp_path / "own.xml"
    own.write_text("<dds/>")
    assert perception_nodes(seg_model="s.onnx", fastdds_profile=str(own))[0].env == {
        "FASTDDS_DEFAULT_PROFILES_FILE": str(own)}
    with pytest.raises(ConfigError, match="fastdds_profile: .* is not a file"):
        perception_nodes(seg_model="s.onnx", fastdds_profile=str(tmp_path / "missing.xml"))
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp")
    assert perception_nodes(seg_model="s.onnx")[0].env == {}


def test_a_model_that_does_not_exist_fails_the_launch_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match=r"launch argument seg_model: does/not/exist\.onnx does not exist"):
        perception_nodes(seg_model="does/not/exist.onnx")
    with pytest.raises(ConfigError, match=r"launch argument det_model: gone\.onnx does not exist"):
        perception_nodes(nodes="both", seg_model="s.onnx", det_model="gone.onnx")
    params = _write(tmp_path, "detection_node:\n  ros__parameters:\n    model_path: missing/det.onnx\n", "det.yaml")
    with pytest.raises(ConfigError, match=r"det\.yaml: detection_node model_path: missing/det\.onnx does not exist"):
        perception_nodes(nodes="detection", params_file=str(params))
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (seg,) = perception_nodes(seg_model=str(folder))  # a checkpoint folder is a model too
    assert seg.parameters[-1]["model_path"] == str(folder)


def _replay_launch(monkeypatch, tmp_path, **arguments):
    """The replay launch file against the stand-ins: (actions its OpaqueFunction returns, every action created)."""
    from helpers.fake_launch import load_launch_file

    module, created = load_launch_file(monkeypatch, ROOT / "launch" / "replay_eval.launch.py")
    description = module.generate_launch_description()
    bag = tmp_path / "bag"
    bag.mkdir(exist_ok=True)
    context = {name: default for name, (default, _) in module.ARGUMENTS.items()}
    context.update({"bag": str(bag), "model": "m.onnx", **arguments})
    return description[-1].kwargs["function"](context), created


def test_replay_launch_with_a_missing_model_starts_nothing(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match=r"launch argument model: does/not/exist\.onnx does not exist"):
        _replay_launch(monkeypatch, tmp_path, model="does/not/exist.onnx")
    from helpers.fake_launch import Recorder

    assert not [a for a in Recorder.created if "executable" in a.kwargs]  # no Node action was built


def _exit_handlers(actions):
    """{executable: on_exit function} of the OnProcessExit handlers the replay launch registers."""
    nodes = [a for a in actions if "executable" in a.kwargs]
    handlers = {}
    for action in actions:
        if "executable" in action.kwargs:
            continue
        on_exit = action.args[0]
        target = on_exit.kwargs["target_action"]
        assert target in nodes
        handlers[target.kwargs["executable"]] = on_exit.kwargs["on_exit"]
    return handlers


class _Context:
    def __init__(self, is_shutdown: bool) -> None:
        self.is_shutdown = is_shutdown


def test_replay_launch_fails_at_once_when_the_node_or_the_player_dies(monkeypatch, tmp_path):
    """The node exiting 1 (a model it cannot load) or the player failing must end the launch non-zero with a
    one-line reason, instead of the player waiting out its start-up timeout and the evaluator waiting forever."""
    import types

    actions, _ = _replay_launch(monkeypatch, tmp_path)
    handlers = _exit_handlers(actions)
    assert set(handlers) == {"segmentation_node", "bag_player_node", "evaluator_node"}
    running, ending = _Context(False), _Context(True)

    def exited(code):
        return types.SimpleNamespace(returncode=code)

    for code in (1, 0, -9):  # the node must run until the evaluation is done: any exit fails the job
        with pytest.raises(lc.LaunchFailed, match=rf"segmentation_node \(segmentation_node\) exited with code {code}"):
            handlers["segmentation_node"](exited(code), running)
    with pytest.raises(lc.LaunchFailed, match="bag_player_node .* exited with code 1") as failed:
        handlers["bag_player_node"](exited(1), running)
    assert "\n" not in str(failed.value)
    assert handlers["bag_player_node"](exited(0), running) is None  # playback done: the evaluator ends the job
    # when the launch is already ending (the evaluator finished, or Ctrl-C) the others' exits are expected
    assert handlers["segmentation_node"](exited(0), ending) is None
    assert handlers["bag_player_node"](exited(-2), ending) is None
    (emit,) = handlers["evaluator_node"](exited(0), running)
    assert "report written" in emit.kwargs["event"].kwargs["reason"]
    with pytest.raises(RuntimeError, match="exited with 1"):  # an incomplete or failed evaluation fails the launch
        handlers["evaluator_node"](exited(1), ending)


def test_process_exited_policies():
    launch = lc.NodeLaunch("x_node", "x", "")
    lc.process_exited(launch, 1, shutting_down=False)  # "never": a plain launch does not care
    launch.exit_fails_launch = "error"
    lc.process_exited(launch, 0, shutting_down=False)
    with pytest.raises(lc.LaunchFailed, match="x_node \\(x\\) exited with code 3 before the job finished"):
        lc.process_exited(launch, 3, shutting_down=False)
    launch.exit_fails_launch = "sometimes"
    with pytest.raises(ValueError, match="exit_fails_launch"):
        lc.process_exited(launch, 3, shutting_down=False)


@pytest.mark.parametrize("node", [lc.EVALUATOR, lc.BAG_PLAYER])
def test_evaluator_and_player_defaults_come_from_their_config(node):
    defaults = lc.load_defaults(node)
    assert set(defaults) == set(lc.specs(node))
    assert all(spec.read_only for spec in lc.NODE_PARAMS[node])


def test_evaluator_and_player_defaults_agree_with_the_bag_layout():
    from vlt_perception.bag.replay import MODES
    from vlt_perception.bag.topics import BagTopics
    from vlt_perception.labels import CITYSCAPES_CLASSES, CITYSCAPES_THING_CLASSES

    topics = BagTopics()
    evaluator, player = lc.load_defaults(lc.EVALUATOR), lc.load_defaults(lc.BAG_PLAYER)
    assert (evaluator["gt_labels_topic"], evaluator["gt_detections_topic"], evaluator["condition_topic"],
            evaluator["camera_topic"]) == (topics.labels, topics.detections, topics.condition, topics.image)
    assert evaluator["class_names"] == list(CITYSCAPES_CLASSES)
    assert evaluator["thing_classes"] == list(CITYSCAPES_THING_CLASSES)
    assert player["camera_topics"] == [topics.image, f"{topics.image}/compressed"]
    assert player["latched_topics"] == [topics.condition] and player["wait_topics"] == [topics.image]
    assert set(lc.PLAYER_MODES) == set(MODES)


def test_params_file_doubles_must_be_written_as_doubles(tmp_path):
    """ROS declares a whole number in a params file as INTEGER, which a double parameter refuses: say so at launch."""
    params = _write(tmp_path, "/**:\n  ros__parameters:\n    diagnostics_period: 2\n", "ints.yaml")
    with pytest.raises(ConfigError, match=r"ints\.yaml \[/\*\*\]: diagnostics_period must be double, got integer 2"):
        perception_nodes(seg_model="s.onnx", params_file=str(params))


def test_max_pixels_has_a_maximum():
    spec = lc.specs(lc.SEGMENTATION)["max_pixels"]
    assert spec.check(lc.MAX_PIXELS_LIMIT) is None
    assert "<=" in spec.check(lc.MAX_PIXELS_LIMIT + 1)
