"""The words of the pretraining corpus, in one importable place.

The captions (:mod:`vlt_training.pretrain.captions`), the zero-shot report (:mod:`vlt_training.pretrain.report`) and
the FAMix prompt-driven style mining all draw from these tables, so the text tower is trained on exactly
the words the prompts later use.

- :data:`CLASS_WORDS`: every Cityscapes class name (the canonical name first) with the synonyms captions use.
- :data:`STYLE_BINS`: each appearance attribute of the corpus, binned; every bin has adjectives ("foggy") and
  prepositional phrases ("in dense fog"). The first adjective of a bin is its canonical style word.
- :data:`CONDITIONS`: the five-way appearance classes of the zero-shot report (clear / fog / night / rain / snow).
"""

from __future__ import annotations

from vlt_perception.labels import CITYSCAPES_CLASSES

# Singular and plural forms of each Cityscapes class; the canonical class name comes first.
CLASS_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "road": (("road", "roads"), ("street", "streets"), ("lane", "lanes")),
    "sidewalk": (("sidewalk", "sidewalks"), ("pavement", "pavements")),
    "building": (("building", "buildings"), ("house", "houses"), ("facade", "facades")),
    "wall": (("wall", "walls"),),
    "fence": (("fence", "fences"),),
    "pole": (("pole", "poles"), ("lamp post", "lamp posts")),
    "traffic light": (("traffic light", "traffic lights"),),
    "traffic sign": (("traffic sign", "traffic signs"), ("road sign", "road signs"), ("sign", "signs")),
    "vegetation": (("vegetation", "vegetation"), ("tree", "trees"), ("hedge", "hedges")),
    "terrain": (("terrain", "terrain"), ("grass", "grass")),
    "sky": (("sky", "sky"),),
    "person": (("person", "people"), ("pedestrian", "pedestrians")),
    "rider": (("rider", "riders"), ("cyclist", "cyclists")),
    "car": (("car", "cars"),),
    "truck": (("truck", "trucks"), ("lorry", "lorries")),
    "bus": (("bus", "buses"),),
    "train": (("train", "trains"), ("tram", "trams")),
    "motorcycle": (("motorcycle", "motorcycles"), ("motorbike", "motorbikes")),
    "bicycle": (("bicycle", "bicycles"), ("bike", "bikes")),
}
assert tuple(CLASS_WORDS) == CITYSCAPES_CLASSES

# attribute -> bin -> (adjectives, phrases). Bins are listed in order; the first bin of an attribute is its neutral
# state ("none"), which captions leave unsaid except for the time of day. A table of words: its entries repeat one
# shape by design.
STYLE_BINS: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "time": {
        "day": (("daytime", "sunny", "bright"), ("in daylight", "on a sunny day", "during the day")),
        "dusk": (("dusk", "twilight", "evening"), ("at dusk", "at twilight", "in the evening")),
        "night": (("night", "dark", "nighttime"), ("at night", "in the dark", "by night")),
    },
    "fog": {
        "none": ((), ()),
        "haze": (("hazy", "misty"), ("in haze", "in light mist")),
        "fog": (("foggy", "murky"), ("in dense fog", "in thick fog", "in fog")),
    },
    "rain": {
        "none": ((), ()),
        "light": (("drizzly", "damp"), ("in light rain", "in drizzle")),
        "heavy": (("rainy", "wet"), ("in heavy rain", "in the rain", "in a downpour")),
    },
    "snow": {
        "none": ((), ()),
        "light": (("frosty", "wintry"), ("in light snow", "with a little snow")),
        "heavy": (("snowy", "snow-covered"), ("in heavy snow", "in falling snow", "in a snowstorm")),
    },
    "cast": {
        "neutral": ((), ()),
        "warm": (("warm", "golden", "orange"), ("with a warm tint", "in golden tones")),
        "cool": (("cold", "bluish", "blue"), ("with a blue tint", "in cold tones")),
        "green": (("greenish", "green"), ("with a green tint", "in green tones")),
    },
    "saturation": {
        "normal": ((), ()),
        "monochrome": (("monochrome", "greyscale", "black and white"), ("in black and white", "in greyscale")),
        "muted": (("pastel", "faded", "muted"), ("in pastel colours", "in faded colours")),
        "vibrant": (("vibrant", "colourful", "saturated"), ("in vivid colours", "in saturated colours")),
    },
    "contrast": {
        "normal": ((), ()),
        "low": (("washed-out", "flat"), ("with low contrast", "in washed-out tones")),
    },
    "blur": {
        "sharp": ((), ()),
        "blurry": (("blurry", "out-of-focus", "soft"), ("out of focus", "with motion blur")),
    },
    "noise": {
        "clean": ((), ()),
        "grainy": (("grainy", "noisy"), ("with sensor noise", "with film grain")),
    },
}

# The five-way appearance label of a pair (its dominant condition) and the prompt word of each class.
CONDITIONS: tuple[str, ...] = ("clear", "fog", "night", "rain", "snow")
CONDITION_WORDS: dict[str, str] = {"clear": "clear", "fog": "foggy", "night": "night", "rain": "rainy",
                                   "snow": "snowy"}


def style_words() -> list[str]:
    """Every style adjective of the corpus (canonical ones first within each bin), deduplicated, in order.

    These are the FAMix style words of this project: each names a region of the corpus's appearance family, so a
    prompt such as ``"a foggy photo of a car"`` points somewhere the text tower has been trained to understand.
    """
    seen: dict[str, None] = {}
    for bins in STYLE_BINS.values():
        for adjectives, _ in bins.values():
            seen.update(dict.fromkeys(adjectives))
    return list(seen)


def canonical_style(attribute: str, bin_name: str) -> str:
    """The canonical style word of one bin (``"" `` for a neutral bin)."""
    adjectives = STYLE_BINS[attribute][bin_name][0]
    return adjectives[0] if adjectives else ""


def famix_style_prompts(class_name: str) -> list[str]:
    """FAMix-style prompts ``"a <style> photo of a <class>"`` for one class, one per style word."""
    singular = CLASS_WORDS[class_name][0][0]
    return [f"a {style} photo of a {singular}" for style in style_words()]


def attribute_names() -> list[str]:
    """Names of the entries of :func:`vlt_training.pretrain.corpus.attribute_vector` after the 19 class-presence
    entries: the vision-only control's labels beyond the classes."""
    names = [f"condition={c}" for c in CONDITIONS]
    names += [f"{attr}={b}" for attr, bins in STYLE_BINS.items() for b in bins]
    return names
