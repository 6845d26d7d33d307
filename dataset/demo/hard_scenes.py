"""The hard variant's scene signal of a clip: the location's bed of default-variant components, the city's
band, events of the vocabulary (the location's, the city's, distractors) and the scene's motif."""
from __future__ import annotations

import numpy as np

from dataset.demo.default_variant import DISTRACTOR_LEVEL_DB
from dataset.demo.hard_profiles import (
    HARD_CITY_RATE,
    HARD_CLIP_GAIN_DB_SPREAD,
    HARD_DISTRACTOR_RATE,
    HARD_EVENT_FREQ_LOG,
    HARD_EVENT_LEVEL_DB,
    HARD_FAMILIES,
    HARD_SHAPES,
    HARD_SPREAD,
    EventFamily,
    hard_city,
    hard_event_families,
    hard_location,
    hard_rng,
    hard_scene_profiles,
    hard_shift,
)
from dataset.demo.sound import (
    CITIES,
    NUM_SAMPLES,
    NYQUIST_GUARD_HZ,
    SAMPLE_RATE,
    SCENES,
    ClipKey,
    band_noise,
    coloured_noise,
    component_envelope,
    harmonic_tone,
    unit_rms,
)


def _hard_event(rng, family: EventFamily, shape: int, freq_hz: float) -> np.ndarray:
    """One event of ``family`` in ``shape``, unit RMS over its duration."""
    n = max(int(family.duration_s * SAMPLE_RATE), 64)
    t = np.arange(n) / SAMPLE_RATE
    u = t / family.duration_s  # 0 .. 1 over the event
    if family.kind == "tone":
        sweep = (0.6, -0.6, 0.0)[shape]  # octaves over the event
        instantaneous = freq_hz * 2 ** (sweep * (u - 0.5))
        phase = 2 * np.pi * np.cumsum(instantaneous) / SAMPLE_RATE
        orders = [h for h in range(1, family.harmonics + 1) if h * freq_hz * 1.35 < NYQUIST_GUARD_HZ] or [1]
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
    return unit_rms(x)


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
    place = hard_location(seed, key.scene, key.city, key.location)
    city = hard_city(seed, key.city)
    profile = hard_scene_profiles(seed)[key.scene]
    segment_shift, segment_tilt = hard_shift(hard_rng(seed, 6, s, c, key.location, key.segment),
                                              HARD_SPREAD["segment"], len(place.bed) + 1)
    rng = hard_rng(seed, 7, s, c, key.location, key.segment, key.chunk)

    signal = coloured_noise(rng, place.tilt_db_per_octave + segment_tilt)
    for source, (f, d, r) in zip(place.bed, segment_shift):
        component = source.component
        freq = source.freq_hz * np.exp(f)
        if component.kind == "noise":
            sound = band_noise(rng, freq, component.width_oct)
        else:
            sound = harmonic_tone(rng, freq, component.harmonics)
        envelope = component_envelope(rng, component, source.rate_hz * np.exp(r))
        signal += 10 ** ((source.level_db + d + rng.normal(0, 1.0)) / 20) * sound * envelope
    signal += 10 ** (city.band_db / 20) * band_noise(rng, city.band_hz, 1.0)

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
    signal += 10 ** (rng.normal(*DISTRACTOR_LEVEL_DB) / 20) * band_noise(rng, distractor_hz, 0.7)
    clip_gain_db = rng.normal(0, HARD_CLIP_GAIN_DB_SPREAD)
    return unit_rms(signal) * 10 ** ((place.level_dbfs + clip_gain_db) / 20)
