"""The hard variant (``--variant hard``; docs/demo_hard.md): its settings, its event vocabulary, each
scene's profile and what a city and a location change. The scene signal is ``hard_scenes.py``'s, the
devices ``hard_devices.py``'s.

Same layout, clip counts, devices per split and file-name pattern as the default variant, with more
locations per scene (HARD_LOCATIONS), and sound meant to need capacity:
- a shared vocabulary of short events: HARD_FAMILIES families spread over the spectrum, each in three
  shapes of equal band and energy that differ only in time-frequency shape (a rising or falling sweep or a
  tremolo for tones; a sharp onset, a slow swell or a train of bursts for noise bands);
- scenes in groups (indoor public places, vehicles, outdoors) share most of their event families and
  differ in a few: within a group a scene prefers other shapes of the shared families, has two families
  of its own, and a motif: two of the group's families in a fixed order and lag;
- each location keeps its own subset of the scene's families and components, at its own rates, levels
  and shape preferences; each city adds its own sounds (a steady band and two event families) to every
  scene recorded there; every clip has distractor events drawn from the whole vocabulary;
- the default variant's scene components stay as a weak bed: a location keeps its scene's components with
  probability 0.6 and those of the other scenes of its group with probability 0.4, at lower levels and with
  wider spreads.
Devices are made as TAU's were: a, b and c record the scene (as in the default variant); s1-s6 are device
a's clip convolved with a microphone impulse response of the generator's own (band limits, tilt,
resonances and a comb from a short second path; minimum phase), then the device's gain and self-noise.
The responses written for --dir_dir are of the same family, drawn at other indices than any device's, so
the unseen devices' responses (s4-s6) are never among them.
Every name of the hard modules starts with hard_/HARD_ (or is a class used only there); the default
variant calls none of them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from dataset.demo.default_variant import SCENE_MODELS
from dataset.demo.sound import CITIES, SCENES, Component, keyed_rng

HARD_VERSION = 2  # bump when the hard variant changes (invalidates hard markers, not default ones)
HARD_LOCATIONS = (16, 8, 4)  # per scene: train, test, eval (the default demo: 8, 5, 3)

HARD_GROUPS = (
    ("airport", "shopping_mall", "metro_station"),  # indoor public places
    ("bus", "metro", "tram"),  # vehicles
    ("park", "public_square", "street_pedestrian", "street_traffic"),  # outdoors
)
HARD_FAMILIES = 24  # event families, spread over 160 Hz - 9 kHz (a quarter octave apart)
HARD_SHAPES = 3  # shapes per family
HARD_SHARED_PER_GROUP = 6  # families all scenes of a group share (the groups' sets are disjoint)
HARD_OWN_PER_SCENE = 2  # families of a scene's own, not shared within its group
HARD_SHARED_RATE, HARD_OWN_RATE, HARD_MOTIF_RATE = 2.0, 1.5, 1.5  # per second, before a location changes them
HARD_PREFERRED_P = 0.75  # probability of a scene's preferred shape of a family (the other two share the rest)
HARD_CITY_FAMILIES, HARD_CITY_RATE = 2, 0.6
HARD_DISTRACTOR_RATE = 1.5  # events per second from the whole vocabulary, any shape
HARD_LOCATION_KEEP_FAMILY, HARD_LOCATION_KEEP_MOTIF = 0.75, 0.8
HARD_BED_KEEP_OWN, HARD_BED_KEEP_MATES, HARD_BED_LEVEL_DB = 0.6, 0.4, -6.0
HARD_SPREAD = dict(
    city=dict(freq_log=0.08, level_db=2.0, rate_log=0.12, tilt_db=0.5),
    location=dict(freq_log=0.12, level_db=3.5, rate_log=0.25, tilt_db=0.8),
    segment=dict(freq_log=0.03, level_db=1.5, rate_log=0.08, tilt_db=0.3),
)
HARD_EVENT_FREQ_LOG = dict(city=0.03, location=0.04, event=0.02)  # events' frequency shifts (std, log)
HARD_EVENT_LEVEL_DB = (4.0, 3.0, 3.0)  # mean, location std, event std (dB relative to the background)
HARD_LEVEL_DB = (-4.0, 2.5)  # a location's level: the default demo's scene level plus this mean, std (dB)
HARD_CLIP_GAIN_DB_SPREAD = 2.5


def hard_rng(seed: int, *key: int) -> np.random.Generator:
    """Keys of their own (100, version, ...): never those of the default demo."""
    return keyed_rng(seed, 100, HARD_VERSION, *key)


@dataclass(frozen=True)
class EventFamily:
    kind: str  # "tone" (shapes: rising sweep, falling sweep, tremolo) or "noise" (sharp onset, slow swell, train)
    freq_hz: float
    duration_s: float
    harmonics: int = 1  # tone
    width_oct: float = 0.3  # noise


@functools.cache
def hard_event_families(seed: int) -> tuple[EventFamily, ...]:
    rng = hard_rng(seed, 1)
    centres = np.geomspace(160.0, 9000.0, HARD_FAMILIES) * np.exp(rng.normal(0, 0.03, HARD_FAMILIES))
    families = []
    for centre in centres[rng.permutation(HARD_FAMILIES)]:  # family numbers do not follow frequency
        kind = "tone" if rng.random() < 0.5 else "noise"
        families.append(EventFamily(kind, float(centre), float(rng.uniform(0.06, 0.22)),
                                    harmonics=int(rng.integers(1, 4)), width_oct=float(rng.uniform(0.2, 0.5))))
    return tuple(families)


@dataclass(frozen=True)
class SceneProfile:
    rates: np.ndarray  # [HARD_FAMILIES] events per second
    shape_p: np.ndarray  # [HARD_FAMILIES, HARD_SHAPES]
    motif: tuple[int, int, float]  # first family, second family, lag in seconds
    tilt_db_per_octave: float


def _hard_preference(preferred: int) -> np.ndarray:
    p = np.full(HARD_SHAPES, (1 - HARD_PREFERRED_P) / (HARD_SHAPES - 1))
    p[preferred] = HARD_PREFERRED_P
    return p


@functools.cache
def hard_scene_profiles(seed: int) -> dict:
    """scene -> SceneProfile; scenes of a group share most families and differ in shapes, a few families and
    the motif's order and lag."""
    rng = hard_rng(seed, 2)
    order = rng.permutation(HARD_FAMILIES)
    profiles = {}
    for g, group in enumerate(HARD_GROUPS):
        shared = order[g * HARD_SHARED_PER_GROUP:(g + 1) * HARD_SHARED_PER_GROUP]
        others = np.setdiff1d(np.arange(HARD_FAMILIES), shared)
        own = rng.choice(others, size=(len(group), HARD_OWN_PER_SCENE), replace=False)  # distinct within the group
        motif_families = rng.choice(shared, 2, replace=False)
        group_tilt = np.mean([SCENE_MODELS[scene].tilt_db_per_octave for scene in group])
        for i, scene in enumerate(group):
            rates = np.zeros(HARD_FAMILIES)
            shape_p = np.tile(1.0 / HARD_SHAPES, (HARD_FAMILIES, HARD_SHAPES))
            for j, family in enumerate(shared):
                rates[family] = HARD_SHARED_RATE * np.exp(rng.normal(0, 0.25))
                shape_p[family] = _hard_preference((i + j) % HARD_SHAPES)
            for family in own[i]:
                rates[family] = HARD_OWN_RATE * np.exp(rng.normal(0, 0.25))
                shape_p[family] = _hard_preference(int(rng.integers(HARD_SHAPES)))
            first, second = motif_families if i % 2 == 0 else motif_families[::-1]
            lag = 0.06 + 0.05 * (i // 2)
            tilt = group_tilt + 0.3 * (SCENE_MODELS[scene].tilt_db_per_octave - group_tilt)
            profiles[scene] = SceneProfile(rates, shape_p, (int(first), int(second), lag), float(tilt))
    return profiles


def _hard_group_of(scene: str) -> tuple[str, ...]:
    return next(group for group in HARD_GROUPS if scene in group)


@dataclass(frozen=True)
class HardCity:
    band_hz: float  # a steady noise band (the city's traffic, ventilation, ...)
    band_db: float
    families: tuple[int, ...]  # event families heard everywhere in the city
    event_freq_factor: float


@functools.cache
def hard_city(seed: int, city: str) -> HardCity:
    rng = hard_rng(seed, 3, CITIES.index(city))
    return HardCity(float(np.exp(rng.uniform(np.log(80.0), np.log(2000.0)))), float(rng.normal(-3.0, 2.0)),
                    tuple(int(f) for f in rng.choice(HARD_FAMILIES, HARD_CITY_FAMILIES, replace=False)),
                    float(np.exp(rng.normal(0, HARD_EVENT_FREQ_LOG["city"]))))


@dataclass(frozen=True)
class BedSource:
    component: Component
    freq_hz: float
    level_db: float
    rate_hz: float


@dataclass(frozen=True)
class HardLocation:
    rates: np.ndarray  # [HARD_FAMILIES]
    shape_p: np.ndarray  # [HARD_FAMILIES, HARD_SHAPES]
    motif_rate: float
    event_level_db: float
    event_freq_factor: float
    tilt_db_per_octave: float
    level_dbfs: float
    bed: tuple[BedSource, ...]


def hard_shift(rng, spread: dict, n: int) -> np.ndarray:
    """[n, 3] (freq_log, level_db, rate_log) and a tilt shift."""
    values = np.stack([rng.normal(0, spread[name], n) for name in ("freq_log", "level_db", "rate_log")], axis=1)
    return values, rng.normal(0, spread["tilt_db"])


@functools.cache
def hard_location(seed: int, scene: str, city: str, location: int) -> HardLocation:
    s, c = SCENES.index(scene), CITIES.index(city)
    profile = hard_scene_profiles(seed)[scene]
    rng = hard_rng(seed, 4, s, c, location)
    keep = rng.random(HARD_FAMILIES) < HARD_LOCATION_KEEP_FAMILY
    rates = profile.rates * keep * np.exp(rng.normal(0, 0.5, HARD_FAMILIES))
    shape_p = profile.shape_p * np.exp(rng.normal(0, 0.4, profile.shape_p.shape))
    shape_p /= shape_p.sum(axis=1, keepdims=True)
    motif_rate = HARD_MOTIF_RATE * np.exp(rng.normal(0, 0.4)) * (rng.random() < HARD_LOCATION_KEEP_MOTIF)
    event_level_db = HARD_EVENT_LEVEL_DB[0] + rng.normal(0, HARD_EVENT_LEVEL_DB[1])
    event_freq_factor = np.exp(rng.normal(0, HARD_EVENT_FREQ_LOG["location"]))
    event_freq_factor *= hard_city(seed, city).event_freq_factor

    # the bed: the group's default-demo components, this scene's more likely kept than its mates'
    pool = [(component, HARD_BED_KEEP_OWN if other == scene else HARD_BED_KEEP_MATES)
            for other in _hard_group_of(scene) for component in SCENE_MODELS[other].components]
    kept = [i for i in range(len(pool)) if rng.random() < pool[i][1]]
    city_shift, city_tilt = hard_shift(hard_rng(seed, 5, s, c), HARD_SPREAD["city"], len(pool))
    location_shift, location_tilt = hard_shift(rng, HARD_SPREAD["location"], len(pool))
    shift = city_shift + location_shift
    bed = tuple(BedSource(pool[i][0], pool[i][0].freq_hz * float(np.exp(shift[i, 0])),
                          pool[i][0].level_db + HARD_BED_LEVEL_DB + shift[i, 1],
                          pool[i][0].rate_hz * float(np.exp(shift[i, 2])))
                for i in kept)
    level_dbfs = SCENE_MODELS[scene].level_dbfs + rng.normal(*HARD_LEVEL_DB)
    return HardLocation(rates, shape_p, float(motif_rate), float(event_level_db), float(event_freq_factor),
                        profile.tilt_db_per_octave + city_tilt + location_tilt, float(level_dbfs), bed)
