"""Device impulse responses for DIR augmentation: read once, resampled, normalised, checked.

Real responses: MicIRP (micirp.blogspot.com; credit MicIRP and Xaudia.com). Synthetic ones for
the demo: ``python -m dataset.demo --impulse_responses FOLDER``.
"""
import functools
from pathlib import Path

import torch
import torchaudio

from dataset.audio import AudioError, load_audio
from helpers.base.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3")
SILENCE = 1e-6  # a response whose largest sample is below this (about -120 dBFS) is silent


def response_files(folder) -> list:
    """The audio files under ``folder`` (subfolders included, hidden files left out), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--dir_dir {folder}: no such folder. Give the folder that holds the impulse responses "
                        "(e.g. the MicIRP wav files).")
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES
                   and not any(part.startswith(".") for part in path.relative_to(folder).parts))
    if not files:
        raise DataError(f"--dir_dir {folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)}): put the impulse "
                        "responses there (e.g. the MicIRP wav files), or leave out --dir_dir and --dir_p.")
    return files


def read_response(path, sample_rate: int, resamplers=None) -> torch.Tensor:
    """One response as ``[samples]`` at ``sample_rate``, with unit energy (sum of squares 1).

    Several channels are averaged, as the clips are. Unit energy keeps the power of a broadband
    clip: the response changes the clip's colour, not its level (the files' own levels differ).
    ``resamplers`` (rate -> torchaudio Resample) keeps one per rate: building one is the slow part.
    """
    try:
        response, rate = load_audio(path)
    except AudioError as err:
        raise DataError(f"--dir_dir: {err} Remove it from the folder or replace it with a working copy.") from err
    if not torch.isfinite(response).all():
        raise DataError(f"--dir_dir: {path} holds samples that are not finite numbers (NaN or infinity): "
                        "it is not a usable impulse response. Remove it from the folder.")
    if response.abs().max() < SILENCE:
        raise DataError(f"--dir_dir: {path} is silent (every sample is below {SILENCE:g}): it is not an "
                        "impulse response. Remove it from the folder.")
    if rate != sample_rate:
        resamplers = {} if resamplers is None else resamplers
        if rate not in resamplers:
            resamplers[rate] = torchaudio.transforms.Resample(rate, sample_rate)
        response = resamplers[rate](response)
    return response[0] / response[0].norm()


@functools.lru_cache(maxsize=4)  # checked before training, used by every training phase: read once
def load_impulse_responses(folder, sample_rate: int) -> tuple:
    """``(responses [n, longest], names)``: every response of ``folder`` at ``sample_rate``, zero-padded
    at the end to the longest (which leaves the start of a convolution unchanged)."""
    files = response_files(folder)
    resamplers = {}
    responses = [read_response(path, sample_rate, resamplers) for path in files]
    stacked = torch.zeros(len(responses), max(len(r) for r in responses))
    for row, response in zip(stacked, responses):
        row[:len(response)] = response
    return stacked, tuple(str(path.relative_to(folder)) for path in files)
