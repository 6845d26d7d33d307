"""Synthetic device impulse responses for DIR augmentation (``--dir_dir``), a stand-in for the real MicIRP
responses: made-up microphones for the default variant, the hard variant's own family for the hard one."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset.demo.hard_devices import HARD_TRAINING_RESPONSES, hard_training_impulse_responses
from dataset.demo.plan import check_variant
from dataset.demo.sound import DeviceModel, device_response, keyed_rng, minimum_phase, write_wav

IMPULSE_RESPONSE_PREFIX = "demo_ir_"
IMPULSE_RESPONSE_RATES = (44_100, 48_000)  # like MicIRP: mostly 44.1 kHz, some 48 kHz


def synthetic_impulse_response(index: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """A made-up microphone: band limits, tilt and resonances drawn at random, minimum phase, a short
    onset delay, 20 to 200 ms long, peak 0.9. Returns ``(samples [n] or [n, 2], sample rate)``;
    every fourth response has two channels (a second capsule, slightly later and quieter)."""
    rng = keyed_rng(seed, 7, index)
    rate = IMPULSE_RESPONSE_RATES[index % len(IMPULSE_RESPONSE_RATES)]
    microphone = DeviceModel(
        highpass_hz=rng.uniform(40, 400), lowpass_hz=rng.uniform(4_000, 16_000),
        filter_order=int(rng.integers(1, 4)), tilt_db_per_octave=rng.normal(0, 1.0),
        resonances=tuple((rng.uniform(500, 8_000), rng.normal(0, 5), rng.uniform(0.2, 0.8))
                         for _ in range(int(rng.integers(1, 4)))),
        gain_db=0.0, noise_floor_dbfs=-120)
    n_fft = 8192
    magnitude = np.maximum(device_response(microphone, np.fft.rfftfreq(n_fft, 1.0 / rate)), 1e-5)
    response = minimum_phase(magnitude, n_fft)
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
    check_variant(variant)
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
