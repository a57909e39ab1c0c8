"""The report's sample figures: each is titled with its condition and frame index, not a raw stamp."""

from __future__ import annotations

import numpy as np

from vlt_perception.bag import report
from vlt_perception.bag.matching import EvaluationAccumulator, Match
from vlt_perception.labels import CITYSCAPES_PALETTE

STAMPS = (1_700_000_000_123_456_789, 1_700_000_000_223_456_789, 1_700_000_000_323_456_789)


def _match(stamp: int, condition: str) -> Match:
    gt = np.zeros((8, 12), dtype=np.uint8)
    gt[:, 6:] = 1
    pred = np.ones((8, 12), dtype=np.uint8)
    image = np.full((8, 12, 3), 90, dtype=np.uint8)
    return Match(stamp, condition, {"labels": gt}, {"labels": pred}, latency_ms=5.0, image=image)


def test_sample_figures_are_titled_with_condition_and_frame_index(tmp_path, monkeypatch):
    acc = EvaluationAccumulator(["road", "sidewalk"], samples_per_condition=2)
    acc.set_reference("source_bag")
    acc.add(_match(STAMPS[0], "clear"), "source_bag")
    for stamp in STAMPS:
        acc.add(_match(stamp, "fog"), "fog_bag")
    titles: dict[str, str] = {}
    save = report._save

    def recording_save(fig, path):  # the figure as drawn, read before it is written and closed
        titles[path.name] = fig._suptitle.get_text() if fig._suptitle is not None else ""
        save(fig, path)

    monkeypatch.setattr(report, "_save", recording_save)
    pictures = report._figures(acc, {"bags": {}, "conditions": {}}, tmp_path, CITYSCAPES_PALETTE)

    assert titles["sample_fog_0.png"] == "fog, frame 0"
    assert titles["sample_fog_1.png"] == "fog, frame 1"
    assert titles["sample_reference_0.png"] == "reference, frame 0"
    assert not any(str(stamp) in title for stamp in STAMPS for title in titles.values())
    assert (tmp_path / "sample_fog_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(key for key in pictures if key.startswith("sample:")) == [
        "sample:fog, frame 0", "sample:fog, frame 1", "sample:reference, frame 0"]
