"""The hard variant's devices: a, b and c record the scene as in the default variant; s1-s6 are a's clip
through an impulse response of the generator's own family of microphones, then the device's gain and
self-noise. The responses written for ``--dir_dir`` are of the same family, never a device's."""
from __future__ import annotations

import functools

import numpy as np

from dataset.demo.default_variant import record_with_devices
from dataset.demo.hard_profiles import hard_rng
from dataset.demo.hard_scenes import hard_synthesise_scene
from dataset.demo.sound import (
    ALL_DEVICES,
    CITIES,
    FREQS,
    LOG2_FREQS,
    NUM_SAMPLES,
    SAMPLE_RATE,
    SCENES,
    ClipKey,
    DeviceModel,
    device_response,
    minimum_phase,
)

# Simulated devices: (gain dB, RMS of white self-noise dBFS); each has its own impulse response.
HARD_SIMULATED_DEVICES = {
    "s1": (-4.0, -66.0), "s2": (2.0, -70.0), "s3": (-2.0, -63.0),
    "s4": (-6.0, -60.0), "s5": (3.0, -64.0), "s6": (-8.0, -58.0),
}
HARD_DEVICE_RESPONSE_INDEX = {device: i for i, device in enumerate(HARD_SIMULATED_DEVICES)}  # the family's 0-5
HARD_FIRST_TRAINING_RESPONSE_INDEX = 100  # the responses written for --dir_dir: indices 100, 101, ...
HARD_TRAINING_RESPONSES = 32


def hard_microphone_impulse_response(index: int, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Response ``index`` of the generator's family of microphones: band limits, tilt and resonances drawn
    at random, minimum phase, then a second path 0.1-2 ms later (a reflection in the casing: a comb), a
    short onset delay, 10 to 80 ms long, peak 0.9. Devices s1-s6 are indices 0-5."""
    rng = hard_rng(seed, 8, index)
    microphone = DeviceModel(
        highpass_hz=float(np.exp(rng.uniform(np.log(50.0), np.log(500.0)))),
        lowpass_hz=float(np.exp(rng.uniform(np.log(3_500.0), np.log(16_000.0)))),
        filter_order=int(rng.integers(1, 5)), tilt_db_per_octave=rng.normal(0, 1.5),
        resonances=tuple((float(np.exp(rng.uniform(np.log(300.0), np.log(10_000.0)))), rng.normal(0, 6.0),
                          rng.uniform(0.15, 0.7)) for _ in range(int(rng.integers(1, 5)))),
        gain_db=0.0, noise_floor_dbfs=-120)
    n_fft = 8192
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    response = minimum_phase(np.maximum(device_response(microphone, freqs), 1e-4), n_fft)
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
def hard_device_transfer(device: str, seed: int) -> np.ndarray:
    """rfft of the device's response at the clip length, times its gain: a device of gain 0 dB keeps the level
    of a clip of the scenes' average spectrum (a -3 dB/octave slope)."""
    response = hard_microphone_impulse_response(HARD_DEVICE_RESPONSE_INDEX[device], seed)
    transfer = np.fft.rfft(response, n=NUM_SAMPLES)
    reference = 10 ** (HARD_REFERENCE_TILT_DB_PER_OCTAVE * (LOG2_FREQS - np.log2(1000.0)) / 10) * (FREQS > 20)
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
            rng = hard_rng(seed, 9, SCENES.index(key.scene), CITIES.index(key.city), key.location,
                            key.segment, key.chunk, ALL_DEVICES.index(device))
            noise = rng.standard_normal(NUM_SAMPLES) * 10 ** (HARD_SIMULATED_DEVICES[device][1] / 20)
            through = np.fft.irfft(a_spectrum * hard_device_transfer(device, seed), n=NUM_SAMPLES)
            recordings[device] = through + noise
    return {device: recordings[device] for device in devices}


def hard_record(key: ClipKey, devices, seed: int) -> dict:
    return hard_record_with_devices(hard_synthesise_scene(key, seed), key, devices, seed)


def hard_training_impulse_responses(seed: int = 0, count: int = HARD_TRAINING_RESPONSES):
    """``count`` responses of the devices' family for ``--dir_dir``: indices from
    ``HARD_FIRST_TRAINING_RESPONSE_INDEX`` on, never a device's."""
    for i in range(count):
        yield hard_microphone_impulse_response(HARD_FIRST_TRAINING_RESPONSE_INDEX + i, seed), SAMPLE_RATE
