"""Parameter descriptors built from the spec table (rclpy message types only; no node, no ROS graph)."""

from __future__ import annotations

import pytest

from vlt_perception import launch_config as lc
from vlt_perception.nodes import perception_node


@pytest.mark.parametrize("node", lc.NODES)
def test_every_parameter_gets_a_typed_descriptor(node):
    from rcl_interfaces.msg import ParameterType

    types = {"bool": ParameterType.PARAMETER_BOOL, "int": ParameterType.PARAMETER_INTEGER,
             "double": ParameterType.PARAMETER_DOUBLE, "string": ParameterType.PARAMETER_STRING,
             "string_array": ParameterType.PARAMETER_STRING_ARRAY}
    for spec in lc.NODE_PARAMS[node]:
        desc = perception_node.descriptor(spec)
        assert desc.name == spec.name and desc.type == types[spec.type]
        assert desc.description == spec.description and desc.description
        assert desc.read_only == (spec.name in ("model_path", "engine", "providers"))
        if desc.read_only:
            assert "read-only" in desc.additional_constraints
        elif not spec.dynamic:
            assert "next configure" in desc.additional_constraints  # changes apply at the next configure


def test_ranges_and_choices_are_in_the_descriptor():
    table = lc.specs("detection_node")
    threshold = perception_node.descriptor(table["score_threshold"])
    assert (threshold.floating_point_range[0].from_value, threshold.floating_point_range[0].to_value) == (0.0, 1.0)
    threads = perception_node.descriptor(table["threads"])
    assert (threads.integer_range[0].from_value, threads.integer_range[0].to_value) == (0, 256)
    engine = perception_node.descriptor(table["engine"])
    assert "'onnxruntime'" in engine.additional_constraints and not engine.floating_point_range
    max_pixels = perception_node.descriptor(table["max_pixels"])
    assert (max_pixels.integer_range[0].from_value, max_pixels.integer_range[0].to_value) == (1, lc.MAX_PIXELS_LIMIT)


@pytest.mark.parametrize("node", [lc.EVALUATOR, lc.BAG_PLAYER])
def test_evaluator_and_player_parameters_are_read_only_and_typed(node):
    for spec in lc.NODE_PARAMS[node]:
        desc = perception_node.descriptor(spec)
        assert desc.read_only and desc.description and "read-only" in desc.additional_constraints


def test_a_value_is_traced_to_the_file_and_section_that_set_it(tmp_path):
    """Start-up errors name where a bad value came from: -p on the command line, else the last params file whose
    section applies to the node (rcl's wildcards)."""
    from vlt_perception.nodes import parameters

    first, second, other = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    first.write_text("/**:\n  ros__parameters:\n    threads: 2\n")
    second.write_text("/car1/*:\n  ros__parameters:\n    threads: 3\n")
    other.write_text("detection_node:\n  ros__parameters:\n    threads: 4\n")
    argv = ["node", "--ros-args", "--params-file", str(first), "--params-file", str(second), "--params-file",
            str(other), "-r", "__ns:=/car1"]
    assert parameters.params_files(argv) == [str(first), str(second), str(other)]
    assert parameters.value_source("threads", "/car1/segmentation_node", argv) == f"{second} [/car1/*]"
    assert parameters.value_source("threads", "/segmentation_node", argv) == f"{first} [/**]"
    assert parameters.value_source("threads", "/detection_node", argv) == f"{other} [detection_node]"
    assert parameters.value_source("threads", "/x", argv + ["-p", "threads:=5"]) == "the command line (-p threads:=...)"
    with pytest.raises(lc.ConfigError, match=r"--params-file .*missing\.yaml: no such file"):
        parameters.check_params_files(["node", "--ros-args", "--params-file", str(tmp_path / "missing.yaml")])
    broken = tmp_path / "broken.yaml"
    broken.write_text("/**: [unclosed")
    with pytest.raises(lc.ConfigError, match=r"broken\.yaml: cannot read"):
        parameters.check_params_files(["node", "--ros-args", "--params-file", str(broken)])
    parameters.check_params_files(["node", "--params-file", str(tmp_path / "not-a-ros-argument.yaml")])
