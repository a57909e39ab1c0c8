"""perception.launch.py with a camera list: one multitask_node for every camera (plain Python, no ROS needed)."""

from __future__ import annotations

import pytest

from vlt_perception import launch_config as lc
from vlt_perception.launch_config import ConfigError, perception_nodes

CAMERAS = ["front", "left", "right", "rear"]


@pytest.fixture(autouse=True)
def _models(tmp_path, monkeypatch):
    """The model files the launch arguments name (the launch checks that they exist)."""
    for name in ("mt.onnx", "seg.onnx", "det.onnx", "s.onnx", "d.onnx", "m.onnx"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)


def test_multitask_defaults_cover_every_parameter_and_are_valid():
    defaults = lc.load_defaults(lc.MULTITASK)
    assert set(defaults) == set(lc.specs(lc.MULTITASK))
    for name, value in defaults.items():
        assert lc.specs(lc.MULTITASK)[name].check(value) is None, name
    # It has every parameter of both single-task nodes, meaning the same.
    for node in (lc.SEGMENTATION, lc.DETECTION):
        for name, spec in lc.specs(node).items():
            assert lc.specs(lc.MULTITASK)[name] == spec, name


@pytest.mark.parametrize("text", ["[front,left,right,rear]", "front, left,right ,rear", "['front', 'left', "
                                  "'right', 'rear']"])
def test_a_camera_list_starts_one_multitask_node_with_one_remapping_per_camera(text):
    (node,) = perception_nodes(cameras=text, model="mt.onnx", engine="onnxruntime")
    assert (node.executable, node.name) == (lc.MULTITASK, lc.MULTITASK)
    assert node.remappings == [(f"~/{c}/in/image", f"/{c}/image_raw") for c in CAMERAS]
    overrides = node.parameters[-1]
    assert overrides["cameras"] == CAMERAS and overrides["model_path"] == "mt.onnx"
    assert overrides["engine"] == "onnxruntime" and overrides["input_type"] == "raw"
    assert node.parameters[0].endswith("multitask_node.yaml")


def test_camera_topic_pattern_compressed_and_model_fallbacks():
    (node,) = perception_nodes(cameras="[a,b]", camera_topic="/car/{camera}/rgb", compressed="true",
                               seg_model="seg.onnx", det_model="det.onnx")
    assert node.remappings == [("~/a/in/compressed", "/car/a/rgb/compressed"),
                               ("~/b/in/compressed", "/car/b/rgb/compressed")]
    assert node.parameters[-1]["model_path"] == "seg.onnx" and node.parameters[-1]["input_type"] == "compressed"
    (node,) = perception_nodes(cameras="[a]", camera_topic="/only/image", det_model="det.onnx")
    assert node.remappings == [("~/a/in/image", "/only/image")]  # one camera may take a plain topic
    assert node.parameters[-1]["model_path"] == "det.onnx"


def test_without_cameras_the_launch_is_unchanged():
    nodes = perception_nodes(nodes="both", seg_model="s.onnx", det_model="d.onnx", cameras="")
    assert [n.executable for n in nodes] == [lc.SEGMENTATION, lc.DETECTION]
    assert all(n.remappings == [("~/in/image", "/camera/image_raw")] for n in nodes)


@pytest.mark.parametrize("kwargs, problem", [
    ({"cameras": "[front,front]"}, "repeat"),
    ({"cameras": "[front,2nd]"}, "not valid names"),
    ({"cameras": "[front,]"}, "not valid names"),
    ({"cameras": "[a,b]", "camera_topic": "/one/topic"}, "no {camera} placeholder"),
    ({"cameras": "[a,b]", "model": ""}, "no model"),
    ({"cameras": "[a,b]", "model": "missing.onnx"}, "missing.onnx does not exist"),
])
def test_bad_camera_arguments_are_clear_errors(kwargs, problem):
    args = {"model": "mt.onnx", **kwargs}
    with pytest.raises(ConfigError, match=problem):
        perception_nodes(**args)


def test_params_file_is_validated_against_the_multitask_table(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("multitask_node:\n  ros__parameters:\n    model_path: m.onnx\n    batch_window_ms: 30.0\n")
    (node,) = perception_nodes(cameras="[a,b]", params_file=str(good))
    assert node.parameters[1] == str(good) and "model_path" not in node.parameters[-1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    batch_window_ms: -5.0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*batch_window_ms must be >= 0"):
        perception_nodes(cameras="[a,b]", model="m.onnx", params_file=str(bad))


def test_every_launch_argument_reaches_perception_nodes():
    import inspect

    assert set(inspect.signature(perception_nodes).parameters) == set(lc.LAUNCH_ARGUMENTS)
