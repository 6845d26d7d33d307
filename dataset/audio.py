"""Decoding audio files with PyAV (torchaudio 2.9+ no longer decodes files by itself).

Kept free of the rest of the project, so that an exported submission package can carry it.
"""
import av
import numpy as np
import torch
import torchaudio


class AudioError(RuntimeError):
    """An audio file that cannot be decoded."""


def load_audio(path) -> tuple:
    """Decode an audio file with PyAV -> (float32 tensor ``[1, samples]`` in [-1, 1], sample rate).

    Works for any PCM width (16- and 24-bit included); several channels are averaged to mono.
    Raises AudioError, which names the file, whatever the decoder fails on.
    """
    try:
        audio, sample_rate = _decode(path)
    except AudioError:
        raise
    except Exception as err:  # FFmpeg, OS and PyAV errors alike: the file is unusable
        raise AudioError(f"{path} cannot be decoded ({decoder_reason(err)}).") from err
    if audio is None:
        raise AudioError(f"{path}: no audio samples could be decoded.")
    return audio, sample_rate


def decoder_reason(err) -> str:
    """The decoder's reason without the path it repeats (FFmpeg errors carry it in ``strerror``)."""
    return getattr(err, "strerror", None) or f"{type(err).__name__}: {err}"


def _decode(path) -> tuple:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioError(f"{path} holds no audio stream.")
        stream = container.streams.audio[0]
        sample_rate = stream.rate
        # packed float keeps rate and channels and handles the integer scaling for us; packed, not planar:
        # PyAV 18 reads a planar frame of 8 or more channels past its planes (a crash, not an error)
        to_float = av.AudioResampler(format="flt")
        chunks = [_mono(out) for frame in container.decode(stream) for out in to_float.resample(frame)]
        chunks += [_mono(out) for out in to_float.resample(None)]
    if not chunks:
        return None, sample_rate
    audio = np.concatenate(chunks)[np.newaxis]
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), sample_rate


def _mono(frame) -> np.ndarray:
    """The mean over the channels of a packed float frame: ``[samples]``."""
    return frame.to_ndarray().reshape(frame.samples, len(frame.layout.channels)).mean(axis=1)


def fit_length(waveform: torch.Tensor, n_samples: int) -> tuple:
    """Pad with zeros or cut ``[channels, samples]`` to ``n_samples``; returns (waveform, whether it changed)."""
    length = waveform.shape[-1]
    if length == n_samples:
        return waveform, False
    if length > n_samples:
        return waveform[..., :n_samples], True
    return torch.nn.functional.pad(waveform, (0, n_samples - length)), True


class ClipReader:
    """Reads files as clips of one shape: ``[1, n_samples]`` at ``sample_rate``. Files at another rate
    are resampled (torchaudio's Resample, one per rate, built where it is first needed), and clips
    of another length are padded with zeros or cut."""

    def __init__(self, sample_rate: int, seconds: float = 1.0):
        self.sample_rate, self.n_samples = sample_rate, int(round(seconds * sample_rate))
        self._resamplers = {}

    def __call__(self, path) -> tuple:
        """``(waveform, whether its length had to be changed)``; AudioError for an unusable file."""
        waveform, rate = load_audio(path)
        if rate != self.sample_rate:
            if rate not in self._resamplers:
                self._resamplers[rate] = torchaudio.transforms.Resample(rate, self.sample_rate)
            waveform = self._resamplers[rate](waveform)
        return fit_length(waveform, self.n_samples)
