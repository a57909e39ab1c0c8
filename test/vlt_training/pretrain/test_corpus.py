"""The captioned corpus: deterministic per seed, captions name what is in the image, disjoint from the benchmark."""

from __future__ import annotations

import hashlib
import re
import zlib

import numpy as np
import pytest

from vlt_perception.labels import CITYSCAPES_CLASSES
from vlt_training.pretrain import appearance as ap
from vlt_training.pretrain.captions import TEMPLATES
from vlt_training.pretrain.corpus import SPLITS, CorpusSpec, PretrainCorpus, render_pair, stream_name
from vlt_training.synthetic.benchmark import image_rng
from vlt_training.synthetic.conditions import list_conditions
from vlt_training.synthetic.scene import render_scene
from vlt_training.vocabulary import CLASS_WORDS, STYLE_BINS, famix_style_prompts, style_words

SMALL = CorpusSpec(seed=3, num_train=64, num_heldout=16, height=64, width=128)


def _mentions(caption: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", caption) is not None


def test_pairs_are_deterministic_per_seed():
    a, b = render_pair(SMALL, "train", 5), render_pair(SMALL, "train", 5)
    assert a.caption == b.caption and np.array_equal(a.image, b.image)
    other = render_pair(CorpusSpec(seed=4, height=64, width=128), "train", 5)
    assert not np.array_equal(a.image, other.image)
    # the trainer's per-sample seed redraws the look (appearance + wording), never the scene
    data = PretrainCorpus(SMALL, "train", (0.5,) * 3, (0.5,) * 3, resample_look=True)
    looks = {data.pair(5, sample_seed=s).caption for s in range(6)}
    assert len(looks) > 1
    assert data.pair(5, sample_seed=2).caption == data.pair(5, sample_seed=2).caption
    assert data.pair(5, 2).content.counts == a.content.counts


def test_captions_name_only_what_is_in_the_image():
    seen_things = 0
    for index in range(24):
        pair = render_pair(SMALL, "train", index)
        present = pair.content.present
        for name, forms in CLASS_WORDS.items():
            if name in ("road", "vegetation"):  # "street" / "trees" also describe the place in templates
                continue
            for singular, plural in forms:
                if _mentions(pair.caption, singular) or _mentions(pair.caption, plural):
                    assert name in present, (pair.caption, name, sorted(present))
        counts = pair.content.counts
        if counts:  # the most frequent road user is always named
            top = max(counts, key=counts.get)
            assert any(_mentions(pair.caption, w) for form in CLASS_WORDS[top] for w in form), (pair.caption, counts)
            seen_things += 1
        bins = pair.appearance.bins()
        for attribute in ("fog", "rain", "snow"):  # the weather is always said
            adjectives, phrases = STYLE_BINS[attribute][bins[attribute]]
            if adjectives:
                assert any(_mentions(pair.caption, w) for w in adjectives + phrases), (pair.caption, bins)
        if bins["time"] == "night":
            adjectives, phrases = STYLE_BINS["time"]["night"]
            assert any(_mentions(pair.caption, w) for w in adjectives + phrases), pair.caption
    assert seen_things > 12


def test_vocabulary_covers_classes_styles_and_templates():
    assert len(TEMPLATES) >= 20 and len(set(TEMPLATES)) == len(TEMPLATES)
    assert tuple(CLASS_WORDS) == CITYSCAPES_CLASSES
    words = style_words()
    assert len(words) == len(set(words)) and {"foggy", "night", "rainy", "snowy", "monochrome"} <= set(words)
    assert famix_style_prompts("traffic sign")[0] == f"a {words[0]} photo of a traffic sign"


def test_appearance_family_is_broad_and_exclude_dark_removes_night_and_dusk():
    rng = np.random.default_rng(0)
    looks = [ap.sample_appearance(rng) for _ in range(400)]
    assert {a.condition for a in looks} == {"clear", "fog", "night", "rain", "snow"}
    for attribute, bins in STYLE_BINS.items():  # every bin of every attribute occurs
        assert {a.bins()[attribute] for a in looks} == set(bins), attribute
    assert len({round(a.fog, 3) for a in looks if a.fog}) > 30  # continuous, not a few fixed strengths
    bright = [ap.sample_appearance(rng, exclude_dark=True) for _ in range(400)]
    assert all(a.condition != "night" and not a.is_dark and a.bins()["time"] == "day" for a in bright)
    spec = CorpusSpec(seed=1, num_train=16, height=64, width=128, exclude_dark=True)
    for index in range(8):
        caption = render_pair(spec, "train", index).caption
        for dark in ("night", "dusk"):
            adjectives, phrases = STYLE_BINS["time"][dark]
            assert not any(_mentions(caption, w) for w in adjectives + phrases), caption


def _scene_hash(rng: np.random.Generator) -> str:
    return hashlib.sha1(render_scene(rng, 32, 64).label_ids.tobytes()).hexdigest()


@pytest.mark.parametrize("seed", [0, 1])
def test_corpus_streams_never_reproduce_a_benchmark_scene(seed):
    # By construction: every generator is seeded with (seed, crc32(stream), index), and no corpus stream is a
    # benchmark stream (train, val, val/<condition>), so the entropy differs for every (seed, index).
    benchmark_streams = {"train", "val"} | {f"val/{c}" for c in list_conditions()}
    corpus_streams = {stream_name(s, part) for s in SPLITS for part in ("scene", "look")}
    assert not {zlib.crc32(s.encode()) for s in corpus_streams} & {zlib.crc32(s.encode()) for s in benchmark_streams}
    # And by rendering: the corpus's first scenes differ from the benchmark's val scenes of the same seed.
    from vlt_training.pretrain.corpus import scene_rng

    spec = CorpusSpec(seed=seed)
    val = {_scene_hash(image_rng(seed, "val", i)) for i in range(12)}
    for split in SPLITS:
        corpus = {_scene_hash(scene_rng(spec, split, i)) for i in range(12)}
        assert len(corpus) == 12 and not corpus & val
