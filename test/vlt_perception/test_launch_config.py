"""Node parameter table, YAML defaults and the launch configuration (plain Python, no ROS needed)."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

from vlt_perception import launch_config as lc
from vlt_perception.launch_config import ConfigError, perception_nodes

ROOT = Path(__file__).resolve().parents[2]


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
    seg, det = perception_nodes(nodes="both", seg_model="/m/seg.onnx", det_model="/m/det.onnx",
                                camera_topic="/cam/front/image", namespace="car1", engine="onnxruntime")
    assert (seg.executable, det.executable) == ("segmentation_node", "detection_node")
    assert seg.namespace == det.namespace == "car1"
    assert seg.remappings == [("~/in/image", "/cam/front/image")]
    assert seg.parameters[0] == str(ROOT / "config" / "segmentation_node.yaml")
    assert seg.parameters[-1] == {"input_type": "raw", "model_path": "/m/seg.onnx", "engine": "onnxruntime"}
    assert det.parameters[-1]["model_path"] == "/m/det.onnx"


def test_compressed_input_remaps_the_compressed_topic():
    (seg,) = perception_nodes(seg_model="m.onnx", camera_topic="/cam", compressed="true")
    assert seg.remappings == [("~/in/compressed", "/cam/compressed")]
    assert seg.parameters[-1]["input_type"] == "compressed"


def test_params_file_is_validated_and_may_carry_the_model(tmp_path):
    good = _write(tmp_path, "/**:\n  ros__parameters:\n    model_path: /m/det.onnx\n    score_threshold: 0.5\n")
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
    context.update(nodes="both", seg_model="/m/s.onnx", det_model="/m/d.onnx", namespace="ns")
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
