"""Front end (resampling, log-mel) and the baseline's augmentations, all in torch/torchaudio."""
import torch
import torchaudio
from torch import nn


class LogMelFrontEnd(nn.Module):
    """Waveform ``[B, 1, samples]`` at ``orig_sample_rate`` -> log-mel ``[B, 1, n_mels, frames]``.

    Frequency and time masking act on the mel power before the log, and only in training mode.
    It runs inside the LightningModule so that resampling and the STFT use the accelerator.
    """

    def __init__(self, orig_sample_rate=44100, sample_rate=32000, window_length=3072, hop_length=500,
                 n_fft=4096, n_mels=256, f_min=0, f_max=None, freqm=48, timem=0):
        super().__init__()
        self.sample_rate = sample_rate
        self.resample = torchaudio.transforms.Resample(orig_freq=orig_sample_rate, new_freq=sample_rate)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=window_length, hop_length=hop_length,
            n_mels=n_mels, f_min=f_min, f_max=f_max)
        self.masking = nn.Sequential(
            torchaudio.transforms.FrequencyMasking(freqm, iid_masks=True),
            torchaudio.transforms.TimeMasking(timem, iid_masks=True),
        )

    @classmethod
    def from_args(cls, args) -> "LogMelFrontEnd":
        return cls(orig_sample_rate=args.orig_sample_rate, sample_rate=args.sample_rate,
                   window_length=args.window_length, hop_length=args.hop_length, n_fft=args.n_fft,
                   n_mels=args.n_mels, f_min=args.f_min, f_max=args.f_max, freqm=args.freqm, timem=args.timem)

    def input_shape(self, seconds: float = 1.0) -> tuple:
        """The network's input shape for one clip of ``seconds`` (centred STFT frames)."""
        frames = int(seconds * self.sample_rate) // self.mel.hop_length + 1
        return (1, 1, self.mel.n_mels, frames)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() == 2:  # [B, samples] -> [B, 1, samples]
            waveform = waveform.unsqueeze(1)
        mel = self.mel(self.resample(waveform))
        if self.training:
            mel = self.masking(mel)
        return (mel + 1e-5).log()


def roll_waveform(waveform: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Roll the waveform circularly in time by a uniform random integer in ``[-max_shift, max_shift]``."""
    if max_shift <= 0:
        return waveform
    shift = int(torch.randint(-max_shift, max_shift + 1, ()))
    return waveform.roll(shift, dims=-1)


def mixstyle(x: torch.Tensor, p: float = 0.4, alpha: float = 0.3, eps: float = 1e-6) -> torch.Tensor:
    """Frequency-MixStyle: with probability ``p``, mix each sample's per-frequency statistics with
    those of another sample of the batch, so the model relies less on a device's frequency response.

    ``x`` is a log-mel batch ``[B, C, F, T]``; statistics are taken over channels and time.
    """
    if p <= 0 or torch.rand(()) > p:
        return x
    batch_size = x.size(0)
    mean = x.mean(dim=(1, 3), keepdim=True).detach()
    sigma = (x.var(dim=(1, 3), keepdim=True) + eps).sqrt().detach()
    normalised = (x - mean) / sigma
    lam = torch.distributions.Beta(alpha, alpha).sample((batch_size, 1, 1, 1)).to(x.device, x.dtype)
    perm = torch.randperm(batch_size, device=x.device)
    mixed_mean = mean * lam + mean[perm] * (1 - lam)
    mixed_sigma = sigma * lam + sigma[perm] * (1 - lam)
    return normalised * mixed_sigma + mixed_mean
