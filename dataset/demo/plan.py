"""Which clips a demo set holds, under which names, in which split: the same clip counts and devices per
split for every variant."""
from __future__ import annotations

import math
from dataclasses import dataclass

from dataset.demo.hard_profiles import HARD_LOCATIONS
from dataset.demo.sound import ALL_DEVICES, CITIES, SCENES, TRAIN_DEVICES, ClipKey

# Clip counts per scene at scale 1 (multiplied by `scale`, at least 1 each).
SPLIT25_CLIPS_DEVICE_A = 60  # device a dominates training, as in the real data
SPLIT25_CLIPS_OTHER_DEVICE = 15  # per device b, c, s1, s2, s3
EXTRA_TRAIN_CLIPS_DEVICE_A = 12  # development-train files that are NOT in split25
EXTRA_TRAIN_CLIPS_OTHER_DEVICE = 2
TEST_SEGMENTS = 10  # each recorded by all nine devices
EVAL_CLIPS = 15

# Recording locations per scene; fixed (not scaled) so clip content does not
# depend on scale.  Train, test and eval locations are disjoint.
TRAIN_LOCATIONS = 8
TEST_LOCATIONS = 5
EVAL_LOCATIONS = 3
CHUNKS_PER_SEGMENT = 4  # real segments are 10 s cut into 1-s chunks; shorter here

VARIANTS = ("default", "hard")


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown demo variant {variant!r}: one of {', '.join(VARIANTS)}")


def _scaled(count: int, scale: float) -> int:
    return max(1, int(math.floor(count * scale + 0.5)))


def _locations(counts=(TRAIN_LOCATIONS, TEST_LOCATIONS, EVAL_LOCATIONS)) -> dict[tuple[str, str], list]:
    """(scene, part) -> [(city, location id)] for ``counts`` locations per scene of train, test and eval;
    ids are unique within a city."""
    next_id = dict.fromkeys(CITIES, 0)
    plan = {}
    for scene_index, scene in enumerate(SCENES):
        for part_index, (part, count) in enumerate(zip(("train", "test", "eval"), counts)):
            places = []
            for j in range(count):
                city = CITIES[(scene_index + 2 * part_index + j) % len(CITIES)]
                places.append((city, next_id[city]))
                next_id[city] += 1
            plan[scene, part] = places
    return plan


def _clip_keys(scene: str, places, count: int, start: int = 0) -> list[ClipKey]:
    """The clips number start..start+count-1, spread round-robin over the locations."""
    keys = []
    for index in range(start, start + count):
        city, location = places[index % len(places)]
        within = index // len(places)
        keys.append(ClipKey(scene, city, location, within // CHUNKS_PER_SEGMENT, within % CHUNKS_PER_SEGMENT))
    return keys


@dataclass(frozen=True)
class Recording:
    key: ClipKey
    device: str
    part: str  # "split25", "extra_train", "test" or "eval"


def plan_recordings(scale: float, variant: str = "default") -> list[Recording]:
    """The same clip counts and devices per split for every variant; the hard one has more locations."""
    places = _locations(HARD_LOCATIONS) if variant == "hard" else _locations()
    recordings = []
    other_devices = TRAIN_DEVICES[1:]
    for scene in SCENES:
        train_places = places[scene, "train"]
        # split25: device a, plus the other training devices recording in
        # parallel with (rotating, partly overlapping) subsets of a's clips.
        a_keys = _clip_keys(scene, train_places, _scaled(SPLIT25_CLIPS_DEVICE_A, scale))
        recordings += [Recording(k, "a", "split25") for k in a_keys]
        n_other = _scaled(SPLIT25_CLIPS_OTHER_DEVICE, scale)
        for d, device in enumerate(other_devices):
            offset = d * len(a_keys) // len(other_devices)
            recordings += [Recording(a_keys[(offset + j) % len(a_keys)], device, "split25")
                           for j in range(n_other)]
        # extra development-train clips (same locations, not in split25)
        extra_keys = _clip_keys(scene, train_places, _scaled(EXTRA_TRAIN_CLIPS_DEVICE_A, scale),
                                start=len(a_keys))
        recordings += [Recording(k, "a", "extra_train") for k in extra_keys]
        n_extra_other = _scaled(EXTRA_TRAIN_CLIPS_OTHER_DEVICE, scale)
        for d, device in enumerate(other_devices):
            recordings += [Recording(extra_keys[(d + j) % len(extra_keys)], device, "extra_train")
                           for j in range(n_extra_other)]
        # test: every segment recorded by all nine devices
        for key in _clip_keys(scene, places[scene, "test"], _scaled(TEST_SEGMENTS, scale)):
            recordings += [Recording(key, device, "test") for device in ALL_DEVICES]
        # eval: one device per clip, cycling through all nine
        eval_keys = _clip_keys(scene, places[scene, "eval"], _scaled(EVAL_CLIPS, scale))
        first = SCENES.index(scene)
        recordings += [Recording(k, ALL_DEVICES[(first + j) % len(ALL_DEVICES)], "eval")
                       for j, k in enumerate(eval_keys)]
    return recordings
