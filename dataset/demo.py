"""Synthetic stand-in for the DCASE 2025 Task 1 data, in the real on-disk layout.

The real development set (TAU Urban Acoustic Scenes 2022 Mobile) is ~23 GB and
the 2025 evaluation set is not labelled, so tests, CI and first-time users need
something small that the training code can consume unchanged.  This module
writes a few thousand one-second clips that follow the real layout exactly:

    <root>/audio/<scene>-<city>-<location>-<segment>-<chunk>-<device>.wav
    <root>/meta.csv                      filename, scene_label, identifier, source_label
    <root>/split_setup/split25.csv       filename, scene_label (devices a,b,c,s1,s2,s3)
    <root>/split_setup/test.csv          filename, scene_label (all nine devices)
    <root>/eval/audio/<n>.wav            2025-style evaluation clips, no labels
    <root>/eval/evaluation_setup/fold1_test.csv   filename, device_id

All csv files are TAB-separated; wav files are 1 s, 44.1 kHz, mono, 24-bit PCM.

The sound is not random noise: every scene has its own spectral tilt, a few
characteristic noise bands or harmonic tones, and its own amplitude-modulation
and transient-event rates, so a small CNN can learn the classes.  City,
location, segment and clip each perturb these parameters (frequencies, levels,
rates, phases), so that memorising training locations does not solve the
test split, whose locations are disjoint from training.  Every device colours
the shared scene signal with its own frequency response, gain and noise floor,
so device-specific fine-tuning has something real to adapt to; as in the real
data, the same segment is "recorded" in parallel by several devices.

Everything is derived from the seed through per-clip random generators, so the
same seed gives byte-identical files, independently of `scale`.

Usage:  python -m dataset.demo --out demo_data [--seed 0] [--scale 1.0] [--force] [--impulse_responses FOLDER]
        [--variant default|hard]

``--impulse_responses FOLDER`` also writes a few synthetic device impulse responses there, a
stand-in for the real MicIRP responses of DIR augmentation (``--dir_dir``).

``--variant hard`` writes a harder set in the same layout (section "Hard variant" below, docs/demo_hard.md);
the default variant's files do not depend on it.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import shutil
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEMO_VERSION = 1  # bump when the generator changes (invalidates existing markers)

SAMPLE_RATE = 44_100
NUM_SAMPLES = SAMPLE_RATE  # one-second clips, as in TAU22
SAMPLE_WIDTH_BYTES = 3  # 24-bit PCM
MAX_INT24 = 2**23 - 1

SCENES = (
    "airport", "bus", "metro", "metro_station", "park",
    "public_square", "shopping_mall", "street_pedestrian", "street_traffic", "tram",
)
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "paris")
TRAIN_DEVICES = ("a", "b", "c", "s1", "s2", "s3")  # devices present in split25
ALL_DEVICES = TRAIN_DEVICES + ("s4", "s5", "s6")  # s4-s6 only appear in test/eval
KNOWN_EVAL_DEVICES = set(TRAIN_DEVICES)  # the others are "unknown" in the eval csv

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

MARKER_NAME = ".demo_complete"
IN_PROGRESS_NAME = ".demo_in_progress"  # written first: marks a folder as ours
DEMO_OUTPUTS = ("audio", "eval", "split_setup", "meta.csv", MARKER_NAME, IN_PROGRESS_NAME)

_FREQS = np.fft.rfftfreq(NUM_SAMPLES, 1.0 / SAMPLE_RATE)
_LOG2_FREQS = np.log2(np.maximum(_FREQS, 1.0))
_TIME = np.arange(NUM_SAMPLES) / SAMPLE_RATE
_NYQUIST_GUARD_HZ = 15_000.0  # keep tones below what a 32 kHz resampler keeps


# --------------------------------------------------------------------------
# Scene sound models
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Component:
    """One sound source in a scene: a noise band or harmonic tone times an envelope.

    envelope: "steady" | "am" (sinusoidal, rate_hz) | "babble" (random syllabic
    modulation around rate_hz) | "events" (Poisson bursts, rate_hz per second)
    | "regular" (periodic bursts, rate_hz per second, e.g. rail joints).
    """

    kind: str  # "noise" or "tone"
    freq_hz: float  # band centre (noise) or fundamental (tone)
    level_db: float  # relative to the background noise (RMS, or burst peak)
    width_oct: float = 1.0  # noise: Gaussian bandwidth in octaves
    harmonics: int = 1  # tone: number of harmonics (amplitude 1/h)
    envelope: str = "steady"
    rate_hz: float = 0.0
    depth: float = 0.5  # am / babble modulation depth
    decay_s: float = 0.05  # events / regular: exponential decay time


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


# --------------------------------------------------------------------------
# Device models
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceModel:
    highpass_hz: float
    lowpass_hz: float
    filter_order: int  # Butterworth-like slope of both cut-offs
    tilt_db_per_octave: float
    resonances: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, width oct)
    gain_db: float
    noise_floor_dbfs: float  # RMS of white self-noise


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


def _device_response(device: DeviceModel, freqs: np.ndarray = _FREQS) -> np.ndarray:
    """Zero-phase magnitude response on the rfft grid ``freqs`` (linear)."""
    f = np.maximum(freqs, 1.0)
    log2_freqs = np.log2(f)
    response_db = (
        -10 * np.log10(1 + (device.highpass_hz / f) ** (2 * device.filter_order))
        - 10 * np.log10(1 + (f / device.lowpass_hz) ** (2 * device.filter_order))
        + device.tilt_db_per_octave * (log2_freqs - np.log2(1000.0))
    )
    for centre_hz, gain_db, width_oct in device.resonances:
        response_db += gain_db * np.exp(-0.5 * ((log2_freqs - np.log2(centre_hz)) / width_oct) ** 2)
    response = 10 ** ((response_db + device.gain_db) / 20)
    response[0] = 0.0  # no DC
    return response


_DEVICE_RESPONSES = {name: _device_response(model) for name, model in DEVICE_MODELS.items()}


# --------------------------------------------------------------------------
# Synthesis
# --------------------------------------------------------------------------

def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent generator per (seed, key): content never depends on generation order."""
    return np.random.default_rng(np.random.SeedSequence([seed, DEMO_VERSION, *key]))


def _complex_noise(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(_FREQS.size) + 1j * rng.standard_normal(_FREQS.size)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def _band_noise(rng, centre_hz: float, width_oct: float) -> np.ndarray:
    shape = np.exp(-0.5 * ((_LOG2_FREQS - np.log2(centre_hz)) / width_oct) ** 2)
    return _unit_rms(np.fft.irfft(_complex_noise(rng) * shape, n=NUM_SAMPLES))


def _coloured_noise(rng, tilt_db_per_octave: float) -> np.ndarray:
    shape_db = tilt_db_per_octave * (_LOG2_FREQS - np.log2(1000.0))
    shape = 10 ** (shape_db / 20) * (_FREQS > 20.0)
    return _unit_rms(np.fft.irfft(_complex_noise(rng) * shape, n=NUM_SAMPLES))


def _harmonic_tone(rng, fundamental_hz: float, harmonics: int) -> np.ndarray:
    orders = np.arange(1, harmonics + 1)
    orders = orders[orders * fundamental_hz < _NYQUIST_GUARD_HZ]
    if orders.size == 0:
        orders = np.array([1])
    phases = rng.uniform(0, 2 * np.pi, orders.size)
    waves = np.sin(2 * np.pi * fundamental_hz * orders[:, None] * _TIME + phases[:, None])
    return _unit_rms((waves / orders[:, None]).sum(axis=0))


def _burst_envelope(onsets: np.ndarray, decay_s: float, rng) -> np.ndarray:
    envelope = np.zeros(NUM_SAMPLES)
    for onset, amplitude in zip(onsets, rng.uniform(0.5, 1.0, onsets.size)):
        start = int(onset * SAMPLE_RATE)
        tail = _TIME[: NUM_SAMPLES - start]
        # 2 ms linear attack avoids clicks that would look the same for every source
        envelope[start:] += amplitude * np.minimum(tail / 0.002, 1.0) * np.exp(-tail / decay_s)
    return envelope


def _envelope(rng, component: Component, rate_hz: float) -> np.ndarray:
    if component.envelope == "steady":
        return np.ones(NUM_SAMPLES)
    if component.envelope == "am":
        phase = rng.uniform(0, 2 * np.pi)
        return 1 + component.depth * np.sin(2 * np.pi * rate_hz * _TIME + phase)
    if component.envelope == "babble":
        # sum of three slow sinusoids around rate_hz: irregular, syllable-like
        rates = rate_hz * rng.uniform(0.5, 1.5, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        wobble = np.sin(2 * np.pi * rates[:, None] * _TIME + phases[:, None]).sum(axis=0) / np.sqrt(1.5)
        return np.maximum(1 + component.depth * wobble, 0.0)
    if component.envelope == "events":
        onsets = np.sort(rng.uniform(0, 1, rng.poisson(rate_hz)))
        return _burst_envelope(onsets, component.decay_s, rng)
    if component.envelope == "regular":
        period = 1.0 / rate_hz
        onsets = np.arange(rng.uniform(0, period), 1.0, period)
        onsets = np.clip(onsets + rng.normal(0, 0.05 * period, onsets.size), 0, 1 - 1 / SAMPLE_RATE)
        return _burst_envelope(onsets, component.decay_s, rng)
    raise ValueError(f"unknown envelope {component.envelope!r}")


@dataclass(frozen=True)
class ClipKey:
    """Identifies one piece of scene content (shared by parallel device recordings)."""

    scene: str
    city: str
    location: int
    segment: int
    chunk: int

    def filename(self, device: str) -> str:
        return f"audio/{self.scene}-{self.city}-{self.location}-{self.segment}-{self.chunk}-{device}.wav"

    @property
    def identifier(self) -> str:
        return f"{self.city}-{self.location}"


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
        _perturbation(_rng(seed, 1, scene_index, city_index), CITY_SPREAD, n),
        _perturbation(_rng(seed, 2, scene_index, city_index, key.location), LOCATION_SPREAD, n),
        _perturbation(_rng(seed, 3, scene_index, city_index, key.location, key.segment), SEGMENT_SPREAD, n),
    ]
    freq_factor = np.exp(sum(s["freq_log"] for s in shifts))
    level_shift_db = sum(s["level_db"] for s in shifts)
    rate_factor = np.exp(sum(s["rate_log"] for s in shifts))
    tilt = model.tilt_db_per_octave + sum(s["tilt_db"] for s in shifts)

    rng = _rng(seed, 4, scene_index, city_index, key.location, key.segment, key.chunk)
    signal = _coloured_noise(rng, tilt)
    for i, component in enumerate(model.components):
        freq = component.freq_hz * freq_factor[i]
        if component.kind == "noise":
            source = _band_noise(rng, freq, component.width_oct)
        else:
            source = _harmonic_tone(rng, freq, component.harmonics)
        envelope = _envelope(rng, component, component.rate_hz * rate_factor[i])
        level_db = component.level_db + level_shift_db[i] + rng.normal(0, 1.0)
        signal += 10 ** (level_db / 20) * source * envelope
    distractor_hz = float(np.exp(rng.uniform(np.log(200.0), np.log(8000.0))))
    distractor_db = rng.normal(*DISTRACTOR_LEVEL_DB)
    signal += 10 ** (distractor_db / 20) * _band_noise(rng, distractor_hz, 0.7)

    clip_gain_db = rng.normal(0, CLIP_GAIN_DB_SPREAD)
    return _unit_rms(signal) * 10 ** ((model.level_dbfs + clip_gain_db) / 20)


def record_with_devices(scene_signal: np.ndarray, key: ClipKey, devices, seed: int) -> dict:
    """Colour one scene signal with each device (response, gain, self-noise)."""
    spectrum = np.fft.rfft(scene_signal)
    recordings = {}
    for device in devices:
        rng = _rng(seed, 5, SCENES.index(key.scene), CITIES.index(key.city), key.location,
                   key.segment, key.chunk, ALL_DEVICES.index(device))
        # white noise of RMS r has rfft bins with E|X|^2 = N r^2
        noise_rms = 10 ** (DEVICE_MODELS[device].noise_floor_dbfs / 20)
        noise = _complex_noise(rng) * noise_rms * math.sqrt(NUM_SAMPLES / 2)
        recordings[device] = np.fft.irfft((spectrum + noise) * _DEVICE_RESPONSES[device], n=NUM_SAMPLES)
    return recordings


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float samples in [-1, 1] (``[n]`` mono or ``[n, channels]``) as 24-bit little-endian PCM."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    ints = np.clip(np.round(samples * MAX_INT24), -MAX_INT24 - 1, MAX_INT24).astype("<i4").reshape(-1)
    frames = ints.view(np.uint8).reshape(-1, 4)[:, :SAMPLE_WIDTH_BYTES].tobytes()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(SAMPLE_WIDTH_BYTES)
        wav.setframerate(sample_rate)
        wav.writeframes(frames)


# --------------------------------------------------------------------------
# Synthetic device impulse responses (for DIR augmentation, --dir_dir)
# --------------------------------------------------------------------------

IMPULSE_RESPONSE_PREFIX = "demo_ir_"
IMPULSE_RESPONSE_RATES = (44_100, 48_000)  # like MicIRP: mostly 44.1 kHz, some 48 kHz


def _minimum_phase(magnitude: np.ndarray, n_fft: int) -> np.ndarray:
    """The causal, minimum-phase impulse response of a magnitude response (folded real cepstrum)."""
    cepstrum = np.fft.irfft(np.log(magnitude), n=n_fft)
    folded = np.zeros(n_fft)
    folded[0], folded[n_fft // 2] = cepstrum[0], cepstrum[n_fft // 2]
    folded[1:n_fft // 2] = 2 * cepstrum[1:n_fft // 2]
    return np.fft.irfft(np.exp(np.fft.rfft(folded)), n=n_fft)


def synthetic_impulse_response(index: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """A made-up microphone: band limits, tilt and resonances drawn at random, minimum phase, a short
    onset delay, 20 to 200 ms long, peak 0.9. Returns ``(samples [n] or [n, 2], sample rate)``;
    every fourth response has two channels (a second capsule, slightly later and quieter)."""
    rng = _rng(seed, 7, index)
    rate = IMPULSE_RESPONSE_RATES[index % len(IMPULSE_RESPONSE_RATES)]
    microphone = DeviceModel(
        highpass_hz=rng.uniform(40, 400), lowpass_hz=rng.uniform(4_000, 16_000),
        filter_order=int(rng.integers(1, 4)), tilt_db_per_octave=rng.normal(0, 1.0),
        resonances=tuple((rng.uniform(500, 8_000), rng.normal(0, 5), rng.uniform(0.2, 0.8))
                         for _ in range(int(rng.integers(1, 4)))),
        gain_db=0.0, noise_floor_dbfs=-120)
    n_fft = 8192
    magnitude = np.maximum(_device_response(microphone, np.fft.rfftfreq(n_fft, 1.0 / rate)), 1e-5)
    response = _minimum_phase(magnitude, n_fft)
    length, delay = int(rate * rng.uniform(0.02, 0.2)), int(rng.integers(0, 100))
    response = np.concatenate([np.zeros(delay), response[:length - delay]])
    fade = length // 4
    response[-fade:] *= np.hanning(2 * fade)[fade:]
    if index % 4 == 3:
        lag = int(rng.integers(1, 20))
        response = np.stack([response, 0.7 * np.concatenate([np.zeros(lag), response[:-lag]])], axis=1)
    return 0.9 * response / np.abs(response).max(), rate


def write_demo_impulse_responses(folder, seed: int = 0, count: int | None = None, variant: str = "default") -> Path:
    """Write ``count`` synthetic impulse responses as ``demo_ir_NN.wav`` (24-bit) into ``folder``, for
    ``--dir_dir``: for the default variant 12 (44.1 and 48 kHz, mono and two-channel), for the hard one 32 of
    its devices' family (44.1 kHz, mono; never a device's response). Earlier ``demo_ir_*`` files there are
    replaced; a folder holding other files is refused."""
    _check_variant(variant)
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise FileExistsError(f"{folder} exists and is not a folder")
        others = [p.name for p in folder.iterdir() if not p.name.startswith(IMPULSE_RESPONSE_PREFIX)]
        if others:
            raise FileExistsError(f"{folder} holds other files ({', '.join(sorted(others)[:3])}); refusing to write "
                                  "demo impulse responses there: choose an empty or new folder")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{IMPULSE_RESPONSE_PREFIX}*"):  # a set written earlier (maybe of another variant)
        if stale.is_file():
            stale.unlink()
    if variant == "hard":
        count = HARD_TRAINING_RESPONSES if count is None else count
        responses = hard_training_impulse_responses(seed, count)
    else:
        count = 12 if count is None else count
        responses = (synthetic_impulse_response(index, seed) for index in range(count))
    for index, (samples, rate) in enumerate(responses):
        write_wav(folder / f"{IMPULSE_RESPONSE_PREFIX}{index + 1:02d}.wav", samples, rate)
    name = "" if variant == "default" else f", the {variant} variant's family"
    print(f"{count} synthetic device impulse responses (seed={seed}{name}) -> {folder}")
    return folder


# --------------------------------------------------------------------------
# Hard variant (--variant hard; docs/demo_hard.md)
# --------------------------------------------------------------------------
# Same layout, clip counts, devices per split and file-name pattern as the default variant, with more
# locations per scene (HARD_LOCATIONS), and sound meant to need capacity:
# - a shared vocabulary of short events: HARD_FAMILIES families spread over the spectrum, each in three
#   shapes of equal band and energy that differ only in time-frequency shape (a rising or falling sweep or a
#   tremolo for tones; a sharp onset, a slow swell or a train of bursts for noise bands);
# - scenes in groups (indoor public places, vehicles, outdoors) share most of their event families and
#   differ in a few: within a group a scene prefers other shapes of the shared families, has two families
#   of its own, and a motif: two of the group's families in a fixed order and lag;
# - each location keeps its own subset of the scene's families and components, at its own rates, levels
#   and shape preferences; each city adds its own sounds (a steady band and two event families) to every
#   scene recorded there; every clip has distractor events drawn from the whole vocabulary;
# - the default variant's scene components stay as a weak bed: a location keeps its scene's components with
#   probability 0.6 and those of the other scenes of its group with probability 0.4, at lower levels and with
#   wider spreads.
# Devices are made as TAU's were: a, b and c record the scene (as in the default variant); s1-s6 are device
# a's clip convolved with a microphone impulse response of the generator's own (band limits, tilt,
# resonances and a comb from a short second path; minimum phase), then the device's gain and self-noise.
# The responses written for --dir_dir are of the same family, drawn at other indices than any device's, so
# the unseen devices' responses (s4-s6) are never among them.
# Every name of this section starts with hard_/HARD_ (or is a class used only here); the default variant
# calls none of them.

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

# Simulated devices: (gain dB, RMS of white self-noise dBFS); each has its own impulse response.
HARD_SIMULATED_DEVICES = {
    "s1": (-4.0, -66.0), "s2": (2.0, -70.0), "s3": (-2.0, -63.0),
    "s4": (-6.0, -60.0), "s5": (3.0, -64.0), "s6": (-8.0, -58.0),
}
HARD_DEVICE_RESPONSE_INDEX = {device: i for i, device in enumerate(HARD_SIMULATED_DEVICES)}  # the family's 0-5
HARD_FIRST_TRAINING_RESPONSE_INDEX = 100  # the responses written for --dir_dir: indices 100, 101, ...
HARD_TRAINING_RESPONSES = 32


def _hard_rng(seed: int, *key: int) -> np.random.Generator:
    """Keys of their own (100, version, ...): never those of the default demo."""
    return _rng(seed, 100, HARD_VERSION, *key)


# --------------------------------------------------------------------------
# Hard variant: the event vocabulary and the scenes' profiles
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class EventFamily:
    kind: str  # "tone" (shapes: rising sweep, falling sweep, tremolo) or "noise" (sharp onset, slow swell, train)
    freq_hz: float
    duration_s: float
    harmonics: int = 1  # tone
    width_oct: float = 0.3  # noise


@functools.cache
def hard_event_families(seed: int) -> tuple[EventFamily, ...]:
    rng = _hard_rng(seed, 1)
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
    rng = _hard_rng(seed, 2)
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


# --------------------------------------------------------------------------
# Hard variant: what a city and a location change
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class HardCity:
    band_hz: float  # a steady noise band (the city's traffic, ventilation, ...)
    band_db: float
    families: tuple[int, ...]  # event families heard everywhere in the city
    event_freq_factor: float


@functools.cache
def _hard_city(seed: int, city: str) -> HardCity:
    rng = _hard_rng(seed, 3, CITIES.index(city))
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


def _hard_shift(rng, spread: dict, n: int) -> np.ndarray:
    """[n, 3] (freq_log, level_db, rate_log) and a tilt shift."""
    values = np.stack([rng.normal(0, spread[name], n) for name in ("freq_log", "level_db", "rate_log")], axis=1)
    return values, rng.normal(0, spread["tilt_db"])


@functools.cache
def _hard_location(seed: int, scene: str, city: str, location: int) -> HardLocation:
    s, c = SCENES.index(scene), CITIES.index(city)
    profile = hard_scene_profiles(seed)[scene]
    rng = _hard_rng(seed, 4, s, c, location)
    keep = rng.random(HARD_FAMILIES) < HARD_LOCATION_KEEP_FAMILY
    rates = profile.rates * keep * np.exp(rng.normal(0, 0.5, HARD_FAMILIES))
    shape_p = profile.shape_p * np.exp(rng.normal(0, 0.4, profile.shape_p.shape))
    shape_p /= shape_p.sum(axis=1, keepdims=True)
    motif_rate = HARD_MOTIF_RATE * np.exp(rng.normal(0, 0.4)) * (rng.random() < HARD_LOCATION_KEEP_MOTIF)
    event_level_db = HARD_EVENT_LEVEL_DB[0] + rng.normal(0, HARD_EVENT_LEVEL_DB[1])
    event_freq_factor = np.exp(rng.normal(0, HARD_EVENT_FREQ_LOG["location"]))
    event_freq_factor *= _hard_city(seed, city).event_freq_factor

    # the bed: the group's default-demo components, this scene's more likely kept than its mates'
    pool = [(component, HARD_BED_KEEP_OWN if other == scene else HARD_BED_KEEP_MATES)
            for other in _hard_group_of(scene) for component in SCENE_MODELS[other].components]
    kept = [i for i in range(len(pool)) if rng.random() < pool[i][1]]
    city_shift, city_tilt = _hard_shift(_hard_rng(seed, 5, s, c), HARD_SPREAD["city"], len(pool))
    location_shift, location_tilt = _hard_shift(rng, HARD_SPREAD["location"], len(pool))
    shift = city_shift + location_shift
    bed = tuple(BedSource(pool[i][0], pool[i][0].freq_hz * float(np.exp(shift[i, 0])),
                          pool[i][0].level_db + HARD_BED_LEVEL_DB + shift[i, 1],
                          pool[i][0].rate_hz * float(np.exp(shift[i, 2])))
                for i in kept)
    level_dbfs = SCENE_MODELS[scene].level_dbfs + rng.normal(*HARD_LEVEL_DB)
    return HardLocation(rates, shape_p, float(motif_rate), float(event_level_db), float(event_freq_factor),
                        profile.tilt_db_per_octave + city_tilt + location_tilt, float(level_dbfs), bed)


# --------------------------------------------------------------------------
# Hard variant: synthesis
# --------------------------------------------------------------------------

def _hard_event(rng, family: EventFamily, shape: int, freq_hz: float) -> np.ndarray:
    """One event of ``family`` in ``shape``, unit RMS over its duration."""
    n = max(int(family.duration_s * SAMPLE_RATE), 64)
    t = np.arange(n) / SAMPLE_RATE
    u = t / family.duration_s  # 0 .. 1 over the event
    if family.kind == "tone":
        sweep = (0.6, -0.6, 0.0)[shape]  # octaves over the event
        instantaneous = freq_hz * 2 ** (sweep * (u - 0.5))
        phase = 2 * np.pi * np.cumsum(instantaneous) / SAMPLE_RATE
        orders = [h for h in range(1, family.harmonics + 1) if h * freq_hz * 1.35 < _NYQUIST_GUARD_HZ] or [1]
        offsets = rng.uniform(0, 2 * np.pi, len(orders))
        x = sum(np.sin(h * phase + offset) / h for h, offset in zip(orders, offsets))
        x = x * np.sin(np.pi * u) ** 2
        if shape == 2:
            x = x * (0.5 + 0.5 * np.cos(2 * np.pi * 30.0 * t))
    else:
        freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
        band = np.exp(-0.5 * ((np.log2(np.maximum(freqs, 1.0)) - np.log2(freq_hz)) / family.width_oct) ** 2)
        spectrum = (rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)) * band
        x = np.fft.irfft(spectrum, n=n)
        attack = np.minimum(u / 0.03, 1.0)
        if shape == 0:  # sharp onset, decay
            envelope = attack * np.exp(-u / 0.25)
        elif shape == 1:  # slow swell, abrupt end
            envelope = np.exp(-(1 - u) / 0.25) * np.minimum((1 - u) / 0.03, 1.0)
        else:  # a train of four short bursts
            envelope = attack * np.exp(-((u * 4) % 1) / 0.12)
        x = x * envelope
    return _unit_rms(x)


def _hard_add_event(signal, rng, families, family: int, shape: int, onset_s: float, freq_factor: float,
                    level_db: float) -> None:
    spec = families[family]
    freq = spec.freq_hz * freq_factor * np.exp(rng.normal(0, HARD_EVENT_FREQ_LOG["event"]))
    event = _hard_event(rng, spec, shape, float(freq))
    start = int(onset_s * SAMPLE_RATE)
    event = event[: NUM_SAMPLES - start]
    signal[start:start + event.size] += 10 ** (level_db / 20) * event


def hard_synthesise_scene(key: ClipKey, seed: int) -> np.ndarray:
    """Device-independent scene signal for one clip (float64)."""
    s, c = SCENES.index(key.scene), CITIES.index(key.city)
    families = hard_event_families(seed)
    place = _hard_location(seed, key.scene, key.city, key.location)
    city = _hard_city(seed, key.city)
    profile = hard_scene_profiles(seed)[key.scene]
    segment_shift, segment_tilt = _hard_shift(_hard_rng(seed, 6, s, c, key.location, key.segment),
                                              HARD_SPREAD["segment"], len(place.bed) + 1)
    rng = _hard_rng(seed, 7, s, c, key.location, key.segment, key.chunk)

    signal = _coloured_noise(rng, place.tilt_db_per_octave + segment_tilt)
    for source, (f, d, r) in zip(place.bed, segment_shift):
        component = source.component
        freq = source.freq_hz * np.exp(f)
        if component.kind == "noise":
            sound = _band_noise(rng, freq, component.width_oct)
        else:
            sound = _harmonic_tone(rng, freq, component.harmonics)
        envelope = _envelope(rng, component, source.rate_hz * np.exp(r))
        signal += 10 ** ((source.level_db + d + rng.normal(0, 1.0)) / 20) * sound * envelope
    signal += 10 ** (city.band_db / 20) * _band_noise(rng, city.band_hz, 1.0)

    # events: the location's families, the city's, distractors; then the scene's motif
    event_level = place.event_level_db + segment_shift[-1, 1]
    counts = rng.poisson(place.rates)
    for family in np.flatnonzero(counts):
        for _ in range(counts[family]):
            shape = int(rng.choice(HARD_SHAPES, p=place.shape_p[family]))
            _hard_add_event(signal, rng, families, int(family), shape, rng.uniform(0, 1),
                            place.event_freq_factor, event_level + rng.normal(0, HARD_EVENT_LEVEL_DB[2]))
    for family in city.families:
        for _ in range(rng.poisson(HARD_CITY_RATE)):
            _hard_add_event(signal, rng, families, family, int(rng.integers(HARD_SHAPES)), rng.uniform(0, 1),
                            place.event_freq_factor, event_level + rng.normal(0, HARD_EVENT_LEVEL_DB[2]))
    for _ in range(rng.poisson(HARD_DISTRACTOR_RATE)):
        _hard_add_event(signal, rng, families, int(rng.integers(HARD_FAMILIES)), int(rng.integers(HARD_SHAPES)),
                        rng.uniform(0, 1), place.event_freq_factor, event_level + rng.normal(0, HARD_EVENT_LEVEL_DB[2]))
    first, second, lag = profile.motif
    for _ in range(rng.poisson(place.motif_rate)):
        onset = rng.uniform(0, 1 - lag)
        level = event_level + rng.normal(0, HARD_EVENT_LEVEL_DB[2])
        for family, at in ((first, onset), (second, onset + lag)):
            shape = int(rng.choice(HARD_SHAPES, p=place.shape_p[family]))
            _hard_add_event(signal, rng, families, family, shape, at, place.event_freq_factor, level)

    distractor_hz = float(np.exp(rng.uniform(np.log(200.0), np.log(8000.0))))
    signal += 10 ** (rng.normal(*DISTRACTOR_LEVEL_DB) / 20) * _band_noise(rng, distractor_hz, 0.7)
    clip_gain_db = rng.normal(0, HARD_CLIP_GAIN_DB_SPREAD)
    return _unit_rms(signal) * 10 ** ((place.level_dbfs + clip_gain_db) / 20)


# --------------------------------------------------------------------------
# Hard variant: devices. a, b, c record the scene; s1-s6 are a's clip through an impulse response
# --------------------------------------------------------------------------

def hard_microphone_impulse_response(index: int, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Response ``index`` of the generator's family of microphones: band limits, tilt and resonances drawn
    at random, minimum phase, then a second path 0.1-2 ms later (a reflection in the casing: a comb), a
    short onset delay, 10 to 80 ms long, peak 0.9. Devices s1-s6 are indices 0-5."""
    rng = _hard_rng(seed, 8, index)
    microphone = DeviceModel(
        highpass_hz=float(np.exp(rng.uniform(np.log(50.0), np.log(500.0)))),
        lowpass_hz=float(np.exp(rng.uniform(np.log(3_500.0), np.log(16_000.0)))),
        filter_order=int(rng.integers(1, 5)), tilt_db_per_octave=rng.normal(0, 1.5),
        resonances=tuple((float(np.exp(rng.uniform(np.log(300.0), np.log(10_000.0)))), rng.normal(0, 6.0),
                          rng.uniform(0.15, 0.7)) for _ in range(int(rng.integers(1, 5)))),
        gain_db=0.0, noise_floor_dbfs=-120)
    n_fft = 8192
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    response = _minimum_phase(np.maximum(_device_response(microphone, freqs), 1e-4), n_fft)
    delay_s, gain = rng.uniform(0.1e-3, 2e-3), rng.uniform(0.2, 0.6) * rng.choice((-1.0, 1.0))
    comb = 1 + gain * np.exp(-2j * np.pi * freqs * delay_s)  # |gain| < 1: still minimum phase
    response = np.fft.irfft(np.fft.rfft(response) * comb, n=n_fft)
    length, onset = int(rate * rng.uniform(0.01, 0.08)), int(rng.integers(0, 40))
    response = np.concatenate([np.zeros(onset), response[:length - onset]])
    fade = length // 4
    response[-fade:] *= np.hanning(2 * fade)[fade:]
    return 0.9 * response / np.abs(response).max()


HARD_REFERENCE_TILT_DB_PER_OCTAVE = -3.0  # about the scenes' average: a device's gain is measured on this spectrum


@functools.cache
def _hard_device_transfer(device: str, seed: int) -> np.ndarray:
    """rfft of the device's response at the clip length, times its gain: a device of gain 0 dB keeps the level
    of a clip of the scenes' average spectrum (a -3 dB/octave slope)."""
    response = hard_microphone_impulse_response(HARD_DEVICE_RESPONSE_INDEX[device], seed)
    transfer = np.fft.rfft(response, n=NUM_SAMPLES)
    reference = 10 ** (HARD_REFERENCE_TILT_DB_PER_OCTAVE * (_LOG2_FREQS - np.log2(1000.0)) / 10) * (_FREQS > 20)
    level = np.sqrt(np.sum(reference * np.abs(transfer) ** 2) / np.sum(reference))
    return transfer / level * 10 ** (HARD_SIMULATED_DEVICES[device][0] / 20)


def hard_record_with_devices(scene_signal: np.ndarray, key: ClipKey, devices, seed: int) -> dict:
    """a, b and c as in the default demo; s1-s6: a's recording (circularly) convolved with the device's
    response, plus its gain and white self-noise."""
    direct = [d for d in devices if d not in HARD_SIMULATED_DEVICES]
    recordings = record_with_devices(scene_signal, key, sorted(set(direct) | {"a"}), seed)
    a_spectrum = np.fft.rfft(recordings["a"])
    for device in devices:
        if device in HARD_SIMULATED_DEVICES:
            rng = _hard_rng(seed, 9, SCENES.index(key.scene), CITIES.index(key.city), key.location,
                            key.segment, key.chunk, ALL_DEVICES.index(device))
            noise = rng.standard_normal(NUM_SAMPLES) * 10 ** (HARD_SIMULATED_DEVICES[device][1] / 20)
            through = np.fft.irfft(a_spectrum * _hard_device_transfer(device, seed), n=NUM_SAMPLES)
            recordings[device] = through + noise
    return {device: recordings[device] for device in devices}


def hard_record(key: ClipKey, devices, seed: int) -> dict:
    return hard_record_with_devices(hard_synthesise_scene(key, seed), key, devices, seed)


def hard_training_impulse_responses(seed: int = 0, count: int = HARD_TRAINING_RESPONSES):
    """``count`` responses of the devices' family for ``--dir_dir``: indices from
    ``HARD_FIRST_TRAINING_RESPONSE_INDEX`` on, never a device's."""
    for i in range(count):
        yield hard_microphone_impulse_response(HARD_FIRST_TRAINING_RESPONSE_INDEX + i, seed), SAMPLE_RATE


# --------------------------------------------------------------------------
# Data set plan: which clips exist, under which names, in which split
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown demo variant {variant!r}: one of {', '.join(VARIANTS)}")


def _marker(seed: int, scale: float, variant: str = "default") -> dict:
    """The default variant's marker is the one written before variants existed (its folders stay valid);
    another variant's adds its name and version."""
    marker = {"version": DEMO_VERSION, "seed": int(seed), "scale": float(scale)}
    if variant == "hard":
        marker.update(variant="hard", variant_version=HARD_VERSION)
    return marker


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _variant_of(marker) -> str | None:
    """The variant a marker (or in-progress note) names; None for what is not one."""
    if not isinstance(marker, dict):
        return None
    return marker.get("variant", "default")


def _current(marker) -> bool:
    """Written by this generator's version (and, for a variant, the variant's version)."""
    if not isinstance(marker, dict) or marker.get("version") != DEMO_VERSION:
        return False
    if _variant_of(marker) == "hard":
        return marker.get("variant_version") == HARD_VERSION
    return _variant_of(marker) == "default"


def is_complete(root, variant: str | None = None) -> bool:
    """True when ``root`` holds a finished demo set of this generator version (any seed or scale) of
    ``variant`` (None: of any variant)."""
    marker = _read_json(Path(root) / MARKER_NAME)
    return _current(marker) and variant in (None, _variant_of(marker))


def demo_variant(root) -> str | None:
    """The variant of the demo set in ``root`` ("default", "hard"), finished or not; None if it holds none."""
    root = Path(root)
    return _variant_of(_read_json(root / MARKER_NAME)) or _variant_of(_read_json(root / IN_PROGRESS_NAME))


def _remove_demo_outputs(root: Path) -> None:
    for name in DEMO_OUTPUTS:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _write_tsv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_demo_dataset(root, seed: int = 0, scale: float = 1.0, force: bool = False,
                       variant: str = "default") -> Path:
    """Write the synthetic data set into `root` (see module docstring); return root.

    Returns at once if `root` already holds a complete demo with the same
    version, seed, scale and variant.  A folder with other content is only overwritten
    if it holds an earlier (or interrupted) demo of the same variant, or if `force` is set; even
    then only the demo's own outputs are removed.
    """
    root = Path(root)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    _check_variant(variant)
    wanted = _marker(seed, scale, variant)
    if _read_json(root / MARKER_NAME) == wanted:
        return root
    if root.exists():
        if not root.is_dir():
            raise FileExistsError(f"{root} exists and is not a folder")
        ours = (root / MARKER_NAME).exists() or (root / IN_PROGRESS_NAME).exists()
        if any(root.iterdir()) and not ours and not force:
            raise FileExistsError(
                f"{root} is not empty and holds no demo data set; refusing to overwrite it "
                f"(pass force=True / --force to replace its audio/, eval/, split_setup/ and meta.csv)")
        present = demo_variant(root)
        if ours and present not in (None, variant) and not force:
            raise FileExistsError(
                f"{root} holds the {present} variant of the demo set, not the {variant} one; refusing to replace "
                f"it: write to another folder (python -m dataset.demo --out; the training scripts: another "
                f"--demo_dir), or pass --force (python -m dataset.demo) / force=True to replace it; to finish or "
                f"update it: python -m dataset.demo --out {root} --variant {present}")
        _remove_demo_outputs(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / IN_PROGRESS_NAME).write_text(json.dumps(wanted))

    started = time.perf_counter()
    (root / "audio").mkdir()
    (root / "eval" / "audio").mkdir(parents=True)

    recordings = plan_recordings(scale, variant)
    if variant == "hard":
        record = hard_record
    else:
        def record(key, devices, seed):
            return record_with_devices(synthesise_scene(key, seed), key, devices, seed)
    by_key: dict[ClipKey, list[Recording]] = {}
    for recording in recordings:
        by_key.setdefault(recording.key, []).append(recording)

    eval_order = [r for r in recordings if r.part == "eval"]
    # eval files are numbered in a shuffled order, so names reveal nothing
    eval_name = {r: f"audio/{i}.wav"
                 for i, r in zip(_rng(seed, 6).permutation(len(eval_order)), eval_order)}

    meta_rows, split25_rows, test_rows, eval_rows = [], [], [], []
    total_bytes = 0
    for key, group in by_key.items():
        signals = record(key, [r.device for r in group], seed)
        for recording in group:
            if recording.part == "eval":
                name = eval_name[recording]
                path = root / "eval" / name
                device_id = recording.device if recording.device in KNOWN_EVAL_DEVICES else "unknown"
                eval_rows.append((name, device_id))
            else:
                name = key.filename(recording.device)
                path = root / name
                meta_rows.append((name, key.scene, key.identifier, recording.device))
                if recording.part == "split25":
                    split25_rows.append((name, key.scene))
                elif recording.part == "test":
                    test_rows.append((name, key.scene))
            write_wav(path, signals[recording.device])
            total_bytes += path.stat().st_size

    _write_tsv(root / "meta.csv", ("filename", "scene_label", "identifier", "source_label"), sorted(meta_rows))
    _write_tsv(root / "split_setup" / "split25.csv", ("filename", "scene_label"), sorted(split25_rows))
    _write_tsv(root / "split_setup" / "test.csv", ("filename", "scene_label"), sorted(test_rows))
    _write_tsv(root / "eval" / "evaluation_setup" / "fold1_test.csv", ("filename", "device_id"),
               sorted(eval_rows, key=lambda row: int(row[0][len("audio/"):-len(".wav")])))

    # The marker goes last: an interrupted write is never mistaken for complete.
    (root / MARKER_NAME).write_text(json.dumps(wanted))
    (root / IN_PROGRESS_NAME).unlink()
    name = "" if variant == "default" else f", variant {variant}"
    print(f"demo data set v{DEMO_VERSION} (seed={seed}, scale={scale}{name}) -> {root}: "
          f"{len(split25_rows)} split25, {len(test_rows)} test, "
          f"{len(meta_rows) - len(split25_rows) - len(test_rows)} extra train, {len(eval_rows)} eval clips, "
          f"{total_bytes / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s")
    return root


def main(argv=None) -> None:
    from helpers.base.command_line import StrictParser  # flags written in full, with a hint for a mistyped one
    parser = StrictParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_data", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the generator")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the clip counts")
    parser.add_argument("--force", action="store_true",
                        help="replace audio/, eval/, split_setup/ and meta.csv in a non-demo folder")
    parser.add_argument("--variant", choices=VARIANTS, default="default",
                        help="hard: more variety per scene, devices s1-s6 made by impulse responses "
                             "(docs/demo_hard.md)")
    parser.add_argument("--impulse_responses", metavar="FOLDER", default=None,
                        help="also write synthetic device impulse responses there (for --dir_dir): 12; with "
                             "--variant hard 32 of its devices' family, none of them a device's")
    args = parser.parse_args(argv)
    write_demo_dataset(args.out, seed=args.seed, scale=args.scale, force=args.force, variant=args.variant)
    if args.impulse_responses:
        write_demo_impulse_responses(args.impulse_responses, seed=args.seed, variant=args.variant)


if __name__ == "__main__":
    main()
