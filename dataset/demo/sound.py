"""What every variant of the demo set shares: the clip format, the scenes, cities and devices, the
per-key random generators, the sound sources (noise bands, harmonic tones and their envelopes), a device's
magnitude response and the 24-bit wav writer."""
from __future__ import annotations

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

FREQS = np.fft.rfftfreq(NUM_SAMPLES, 1.0 / SAMPLE_RATE)
LOG2_FREQS = np.log2(np.maximum(FREQS, 1.0))
TIME = np.arange(NUM_SAMPLES) / SAMPLE_RATE
NYQUIST_GUARD_HZ = 15_000.0  # keep tones below what a 32 kHz resampler keeps


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
class DeviceModel:
    highpass_hz: float
    lowpass_hz: float
    filter_order: int  # Butterworth-like slope of both cut-offs
    tilt_db_per_octave: float
    resonances: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, width oct)
    gain_db: float
    noise_floor_dbfs: float  # RMS of white self-noise


def device_response(device: DeviceModel, freqs: np.ndarray = FREQS) -> np.ndarray:
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


def keyed_rng(seed: int, *key: int) -> np.random.Generator:
    """Independent generator per (seed, key): content never depends on generation order."""
    return np.random.default_rng(np.random.SeedSequence([seed, DEMO_VERSION, *key]))


def complex_noise(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(FREQS.size) + 1j * rng.standard_normal(FREQS.size)


def unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def band_noise(rng, centre_hz: float, width_oct: float) -> np.ndarray:
    shape = np.exp(-0.5 * ((LOG2_FREQS - np.log2(centre_hz)) / width_oct) ** 2)
    return unit_rms(np.fft.irfft(complex_noise(rng) * shape, n=NUM_SAMPLES))


def coloured_noise(rng, tilt_db_per_octave: float) -> np.ndarray:
    shape_db = tilt_db_per_octave * (LOG2_FREQS - np.log2(1000.0))
    shape = 10 ** (shape_db / 20) * (FREQS > 20.0)
    return unit_rms(np.fft.irfft(complex_noise(rng) * shape, n=NUM_SAMPLES))


def harmonic_tone(rng, fundamental_hz: float, harmonics: int) -> np.ndarray:
    orders = np.arange(1, harmonics + 1)
    orders = orders[orders * fundamental_hz < NYQUIST_GUARD_HZ]
    if orders.size == 0:
        orders = np.array([1])
    phases = rng.uniform(0, 2 * np.pi, orders.size)
    waves = np.sin(2 * np.pi * fundamental_hz * orders[:, None] * TIME + phases[:, None])
    return unit_rms((waves / orders[:, None]).sum(axis=0))


def _burst_envelope(onsets: np.ndarray, decay_s: float, rng) -> np.ndarray:
    envelope = np.zeros(NUM_SAMPLES)
    for onset, amplitude in zip(onsets, rng.uniform(0.5, 1.0, onsets.size)):
        start = int(onset * SAMPLE_RATE)
        tail = TIME[: NUM_SAMPLES - start]
        # 2 ms linear attack avoids clicks that would look the same for every source
        envelope[start:] += amplitude * np.minimum(tail / 0.002, 1.0) * np.exp(-tail / decay_s)
    return envelope


def component_envelope(rng, component: Component, rate_hz: float) -> np.ndarray:
    if component.envelope == "steady":
        return np.ones(NUM_SAMPLES)
    if component.envelope == "am":
        phase = rng.uniform(0, 2 * np.pi)
        return 1 + component.depth * np.sin(2 * np.pi * rate_hz * TIME + phase)
    if component.envelope == "babble":
        # sum of three slow sinusoids around rate_hz: irregular, syllable-like
        rates = rate_hz * rng.uniform(0.5, 1.5, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        wobble = np.sin(2 * np.pi * rates[:, None] * TIME + phases[:, None]).sum(axis=0) / np.sqrt(1.5)
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


def minimum_phase(magnitude: np.ndarray, n_fft: int) -> np.ndarray:
    """The causal, minimum-phase impulse response of a magnitude response (folded real cepstrum)."""
    cepstrum = np.fft.irfft(np.log(magnitude), n=n_fft)
    folded = np.zeros(n_fft)
    folded[0], folded[n_fft // 2] = cepstrum[0], cepstrum[n_fft // 2]
    folded[1:n_fft // 2] = 2 * cepstrum[1:n_fft // 2]
    return np.fft.irfft(np.exp(np.fft.rfft(folded)), n=n_fft)
