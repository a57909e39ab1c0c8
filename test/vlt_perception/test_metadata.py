"""ModelMetadata: the multi-task task and its detection class list, and that older metadata still reads."""

import json

import pytest

from vlt_perception.metadata import (TASK_DETECTION, TASK_MULTITASK, TASK_SEGMENTATION, MetadataError,
                                     ModelMetadata)


def _multitask(**kw):
    return ModelMetadata(task=TASK_MULTITASK, class_names=["road", "car"], palette=[[0, 0, 0], [1, 2, 3]],
                         detection_class_names=["car", "person"], **kw)


def test_multitask_round_trips_through_json_and_onnx_props():
    md = _multitask(input_height=64, input_width=128)
    assert ModelMetadata.from_json(md.to_json()) == md
    props = md.to_onnx_props()
    assert json.loads(props["detection_class_names"]) == ["car", "person"]
    assert ModelMetadata.from_onnx_props(props) == md
    assert md.is_multitask


def test_multitask_needs_detection_classes():
    with pytest.raises(MetadataError, match="detection_class_names"):
        ModelMetadata(task=TASK_MULTITASK, class_names=["road"], palette=[[0, 0, 0]])


def test_detection_classes_are_refused_on_single_task_metadata():
    with pytest.raises(MetadataError, match="only for task"):
        ModelMetadata(task=TASK_DETECTION, class_names=["car"], detection_class_names=["car"])


@pytest.mark.parametrize("task", [TASK_SEGMENTATION, TASK_DETECTION])
def test_single_task_metadata_serialises_without_the_new_field(task):
    md = ModelMetadata(task=task)
    assert "detection_class_names" not in md.to_dict()
    assert "detection_class_names" not in md.to_onnx_props()


def test_metadata_written_before_the_field_existed_still_loads():
    old = ModelMetadata(task=TASK_SEGMENTATION).to_dict()
    old.pop("detection_class_names", None)
    md = ModelMetadata.from_dict(old)
    assert md.detection_class_names == [] and not md.is_multitask
