"""Front end: resampling and log-mel, in torch/torchaudio (the augmentations are in ``models/augmentation.py``)."""
import torch
import torchaudio
from torch import nn


class LogMelFrontEnd(nn.Module):
    """Waveform ``[B, 1, samples]`` at ``orig_sample_rate`` -> log-mel ``[B, 1, n_mels, frames]``.

    It runs inside the LightningModule so that resampling and the STFT use the accelerator. In
    training, ``TrainingAugmentation`` calls its two halves, ``mel_power`` and ``log``, and masks
    the mel power in between.
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
    def from_args(cls, args) -> "LogMelFrontEnd":
        return cls(orig_sample_rate=args.orig_sample_rate, sample_rate=args.sample_rate,
                   window_length=args.window_length, hop_length=args.hop_length, n_fft=args.n_fft,
                   n_mels=args.n_mels, f_min=args.f_min, f_max=args.f_max)

    def input_shape(self, seconds: float = 1.0) -> tuple:
        """The network's input shape for one clip of ``seconds`` (centred STFT frames)."""
        frames = int(seconds * self.sample_rate) // self.mel.hop_length + 1
        return (1, 1, self.mel.n_mels, frames)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.log(self.mel_power(waveform))

    def mel_power(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() == 2:  # [B, samples] -> [B, 1, samples]
            waveform = waveform.unsqueeze(1)
        return self.mel(self.resample(waveform))

    @staticmethod
    def log(mel: torch.Tensor) -> torch.Tensor:
        return (mel + 1e-5).log()
