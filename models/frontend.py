"""Front end: resampling and log-mel, in torch/torchaudio (the augmentations: helpers/training/augmentation.py)."""
import inspect

import torch
import torchaudio
from torch import nn


def full_precision(tensor: torch.Tensor):
    """A context in which autocast is off on ``tensor``'s device: what runs in it computes in the dtype of
    its inputs (the front ends pass float32)."""
    return torch.autocast(tensor.device.type, enabled=False)


class LogMelFrontEnd(nn.Module):
    """Waveform ``[B, 1, samples]`` at ``orig_sample_rate`` -> log-mel ``[B, 1, n_mels, frames]``.

    It runs inside the LightningModule so that resampling and the STFT use the accelerator. It computes in
    float32 whatever the precision of the run (``full_precision``): under 16-bit autocast loud clips
    overflow the mel power, and training and test features would differ. Every front end has two
    halves: ``spectrogram`` (here the mel power) and ``finish`` (here the log); in training
    ``TrainingAugmentation`` masks the spectrogram in between, as the organisers mask the mel power.
    """

    def __init__(self, orig_sample_rate=44100, sample_rate=32000, window_length=3072, hop_length=500,
                 n_fft=4096, n_mels=256, f_min=0, f_max=None):
        super().__init__()
        self.sample_rate = sample_rate
        self.resample = torchaudio.transforms.Resample(orig_freq=orig_sample_rate, new_freq=sample_rate)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=window_length, hop_length=hop_length,
            n_mels=n_mels, f_min=f_min, f_max=f_max)

    @classmethod
    def from_settings(cls, settings: dict, orig_sample_rate: int = None) -> "LogMelFrontEnd":
        """From the front-end flags in ``settings`` (any others are ignored; a missing one keeps its default),
        for audio at ``orig_sample_rate`` (default: the settings')."""
        defaults = inspect.signature(cls.__init__).parameters
        values = {name: settings.get(name, p.default) for name, p in defaults.items() if name != "self"}
        if orig_sample_rate is not None:
            values["orig_sample_rate"] = orig_sample_rate
        return cls(**values)

    def input_shape(self, seconds: float = 1.0) -> tuple:
        """The network's input shape for one clip of ``seconds`` (centred STFT frames)."""
        frames = int(seconds * self.sample_rate) // self.mel.hop_length + 1
        return (1, 1, self.mel.n_mels, frames)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.finish(self.spectrogram(waveform))

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """The mel power (float32), in which training masks (before the log)."""
        if waveform.dim() == 2:  # [B, samples] -> [B, 1, samples]
            waveform = waveform.unsqueeze(1)
        with full_precision(waveform):
            return self.mel(self.resample(waveform.float()))

    @staticmethod
    def finish(mel: torch.Tensor) -> torch.Tensor:
        """The log of the mel power (float32)."""
        with full_precision(mel):
            return (mel.float() + 1e-5).log()
