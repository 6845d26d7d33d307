"""The default variant's sound: every scene's model (its tilt, noise bands, tones and their envelopes),
the spreads of what city, location, segment and clip change, and every device's response, gain and noise
floor; the scene signal of a clip and its recordings by each device."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dataset.demo.sound import (
    ALL_DEVICES,
    CITIES,
    NUM_SAMPLES,
    SCENES,
    ClipKey,
    Component,
    DeviceModel,
    band_noise,
    coloured_noise,
    complex_noise,
    component_envelope,
    device_response,
    harmonic_tone,
    keyed_rng,
    unit_rms,
)


@dataclass(frozen=True)
class SceneModel:
    level_dbfs: float  # overall RMS level (before clip gain and device gain)
    tilt_db_per_octave: float  # slope of the background noise around 1 kHz
    components: tuple[Component, ...]


def _noise(freq, width, level, envelope="steady", rate=0.0, depth=0.5, decay=0.05):
    return Component("noise", freq, level, width_oct=width, envelope=envelope,
                     rate_hz=rate, depth=depth, decay_s=decay)


def _tone(freq, harmonics, level, envelope="steady", rate=0.0, depth=0.5, decay=0.05):
    return Component("tone", freq, level, harmonics=harmonics, envelope=envelope,
                     rate_hz=rate, depth=depth, decay_s=decay)

# Hand-designed caricatures of the ten scenes.  Some pairs deliberately share
# character (metro/tram, public_square/street_pedestrian, airport/shopping_mall)
# so that, like the real task, not everything is trivially separable.
SCENE_MODELS: dict[str, SceneModel] = {
    "airport": SceneModel(-32, -3.0, (
        _noise(180, 1.0, 2),  # ventilation
        _noise(1000, 1.2, -2, "babble", 4.0, 0.8),  # distant chatter
        _tone(660, 3, -8, "regular", 0.4, decay=0.4),  # announcement chime
        _noise(3000, 1.5, 8, "events", 2.0, decay=0.03),  # suitcase wheels, steps
    )),
    "bus": SceneModel(-28, -6.0, (
        _tone(38, 8, 4, "am", 0.7, 0.3),  # diesel engine harmonics
        _noise(120, 0.8, 8, "am", 0.5, 0.4),  # body rumble
        _noise(1200, 1.0, -6, "babble", 4.0, 0.8),  # passengers
        _noise(2500, 1.0, 4, "events", 1.0, decay=0.1),  # rattles
    )),
    "metro": SceneModel(-26, -4.5, (
        _noise(90, 0.8, 9, "am", 1.5, 0.4),  # tunnel rumble
        _tone(2800, 2, -2, "am", 0.7, 0.9),  # wheel squeal
        _noise(400, 1.5, 12, "regular", 3.0, decay=0.04),  # rail joints
    )),
    "metro_station": SceneModel(-31, -3.5, (
        _noise(250, 1.2, 3),  # reverberant hum
        _noise(900, 1.3, 0, "babble", 3.0, 0.7),  # crowd
        _tone(1000, 2, -6, "regular", 0.5, decay=0.3),  # beeps and chimes
        _noise(4000, 1.2, 6, "events", 1.5, decay=0.15),  # reverberant steps
    )),
    "park": SceneModel(-36, -1.5, (
        _noise(4500, 0.15, 10, "events", 4.0, decay=0.06),  # bird chirps
        _noise(2800, 0.1, 6, "events", 2.0, decay=0.1),  # a second bird
        _noise(100, 1.0, 4, "babble", 0.5, 0.8),  # wind gusts
    )),
    "public_square": SceneModel(-32, -2.5, (
        _noise(800, 1.3, 3, "babble", 4.5, 0.8),  # crowd
        _noise(5000, 1.0, 0),  # fountain
        _noise(2000, 2.0, 6, "events", 2.0, decay=0.02),  # footsteps
        _noise(150, 1.0, 0, "am", 0.25, 0.5),  # distant traffic
    )),
    "shopping_mall": SceneModel(-31, -3.0, (
        _noise(700, 1.3, 2, "babble", 4.0, 0.8),  # crowd
        _tone(220, 5, -2, "am", 2.0, 0.5),  # background music
        _tone(330, 4, -5, "am", 2.0, 0.5),
        _noise(300, 1.0, 0),  # air conditioning
    )),
    "street_pedestrian": SceneModel(-31, -2.5, (
        _noise(1500, 2.0, 10, "regular", 3.5, decay=0.02),  # footsteps
        _noise(900, 1.3, 1, "babble", 5.0, 0.8),  # passers-by
        _noise(200, 1.2, 2, "am", 0.3, 0.5),  # traffic nearby
    )),
    "street_traffic": SceneModel(-27, -4.0, (
        _noise(400, 1.5, 9, "am", 0.3, 0.7),  # passing cars
        _tone(60, 6, 0, "am", 0.3, 0.5),  # engines
        _tone(420, 3, -8, "regular", 0.4, decay=0.5),  # horns
        _noise(6000, 1.0, -2, "am", 0.3, 0.7),  # tyre noise
    )),
    "tram": SceneModel(-28, -4.0, (
        _noise(110, 0.9, 8, "am", 1.0, 0.3),  # rumble
        _tone(1600, 3, -4, "regular", 0.6, decay=0.3),  # bell
        _noise(500, 1.5, 8, "regular", 1.5, decay=0.06),  # rail joints
        _tone(3500, 1, -8, "am", 0.5, 0.9),  # squeal
    )),
}

# Spread of the random perturbations (std of a normal; frequencies and rates
# are perturbed multiplicatively in log space).  City and location shifts are
# shared by all clips recorded there; segment and clip shifts vary within.
CITY_SPREAD = dict(freq_log=0.04, level_db=1.0, rate_log=0.06, tilt_db=0.25)
LOCATION_SPREAD = dict(freq_log=0.05, level_db=1.5, rate_log=0.10, tilt_db=0.3)
SEGMENT_SPREAD = dict(freq_log=0.02, level_db=1.0, rate_log=0.05, tilt_db=0.2)
CLIP_GAIN_DB_SPREAD = 2.0
# A scene-independent distractor (a random noise band) in every clip, so that
# the classes are not separable by a single spectral peak.
DISTRACTOR_LEVEL_DB = (-16.0, 4.0)  # mean, std relative to the background


# a: the reference binaural recorder (nearly flat); b, c: phones; s1-s6:
# simulated devices.  s4-s6 are never in training and are deliberately unlike
# the training devices (narrow band, strong resonances, loud noise floors).
DEVICE_MODELS: dict[str, DeviceModel] = {
    "a": DeviceModel(20, 20_000, 2, 0.0, (), 0.0, -90),
    "b": DeviceModel(150, 12_000, 2, 0.0, ((3000, 4, 0.6),), -3.0, -66),
    "c": DeviceModel(100, 15_000, 3, 1.0, ((800, -3, 0.8),), 2.0, -72),
    "s1": DeviceModel(300, 8_000, 2, 0.0, ((1500, 3, 1.0),), -6.0, -62),
    "s2": DeviceModel(80, 10_000, 4, 0.0, ((1000, -6, 0.4), (5000, 6, 0.5)), 0.0, -68),
    "s3": DeviceModel(200, 16_000, 2, -1.5, ((250, 3, 0.6),), 4.0, -64),
    "s4": DeviceModel(400, 6_000, 4, 0.0, ((2000, 8, 0.4),), -4.0, -58),
    "s5": DeviceModel(50, 7_000, 2, 2.0, ((800, 5, 0.5), (4000, -6, 0.6)), 3.0, -60),
    "s6": DeviceModel(250, 11_000, 3, -2.0, ((1500, 6, 0.3), (6000, 5, 0.4)), -8.0, -56),
}


_DEVICE_RESPONSES = {name: device_response(model) for name, model in DEVICE_MODELS.items()}


def _perturbation(rng, spread: dict, n_components: int) -> dict:
    return dict(
        freq_log=rng.normal(0, spread["freq_log"], n_components),
        level_db=rng.normal(0, spread["level_db"], n_components),
        rate_log=rng.normal(0, spread["rate_log"], n_components),
        tilt_db=rng.normal(0, spread["tilt_db"]),
    )


def synthesise_scene(key: ClipKey, seed: int) -> np.ndarray:
    """Device-independent scene signal for one clip (float64, ~level_dbfs RMS)."""
    scene_index = SCENES.index(key.scene)
    city_index = CITIES.index(key.city)
    model = SCENE_MODELS[key.scene]
    n = len(model.components)
    # Shifts shared by everything recorded in this city / location / segment.
    shifts = [
        _perturbation(keyed_rng(seed, 1, scene_index, city_index), CITY_SPREAD, n),
        _perturbation(keyed_rng(seed, 2, scene_index, city_index, key.location), LOCATION_SPREAD, n),
        _perturbation(keyed_rng(seed, 3, scene_index, city_index, key.location, key.segment), SEGMENT_SPREAD, n),
    ]
    freq_factor = np.exp(sum(s["freq_log"] for s in shifts))
    level_shift_db = sum(s["level_db"] for s in shifts)
    rate_factor = np.exp(sum(s["rate_log"] for s in shifts))
    tilt = model.tilt_db_per_octave + sum(s["tilt_db"] for s in shifts)

    rng = keyed_rng(seed, 4, scene_index, city_index, key.location, key.segment, key.chunk)
    signal = coloured_noise(rng, tilt)
    for i, component in enumerate(model.components):
        freq = component.freq_hz * freq_factor[i]
        if component.kind == "noise":
            source = band_noise(rng, freq, component.width_oct)
        else:
            source = harmonic_tone(rng, freq, component.harmonics)
        envelope = component_envelope(rng, component, component.rate_hz * rate_factor[i])
        level_db = component.level_db + level_shift_db[i] + rng.normal(0, 1.0)
        signal += 10 ** (level_db / 20) * source * envelope
    distractor_hz = float(np.exp(rng.uniform(np.log(200.0), np.log(8000.0))))
    distractor_db = rng.normal(*DISTRACTOR_LEVEL_DB)
    signal += 10 ** (distractor_db / 20) * band_noise(rng, distractor_hz, 0.7)

    clip_gain_db = rng.normal(0, CLIP_GAIN_DB_SPREAD)
    return unit_rms(signal) * 10 ** ((model.level_dbfs + clip_gain_db) / 20)


def record_with_devices(scene_signal: np.ndarray, key: ClipKey, devices, seed: int) -> dict:
    """Colour one scene signal with each device (response, gain, self-noise)."""
    spectrum = np.fft.rfft(scene_signal)
    recordings = {}
    for device in devices:
        rng = keyed_rng(seed, 5, SCENES.index(key.scene), CITIES.index(key.city), key.location,
                   key.segment, key.chunk, ALL_DEVICES.index(device))
        # white noise of RMS r has rfft bins with E|X|^2 = N r^2
        noise_rms = 10 ** (DEVICE_MODELS[device].noise_floor_dbfs / 20)
        noise = complex_noise(rng) * noise_rms * math.sqrt(NUM_SAMPLES / 2)
        recordings[device] = np.fft.irfft((spectrum + noise) * _DEVICE_RESPONSES[device], n=NUM_SAMPLES)
    return recordings


def default_record(key: ClipKey, devices, seed: int) -> dict:
    """The clip ``key`` as each of ``devices`` records it."""
    return record_with_devices(synthesise_scene(key, seed), key, devices, seed)
