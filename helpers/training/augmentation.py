"""Every training augmentation, in one place and in one order.

``TrainingAugmentation`` turns a training batch of waveforms into the network's input. The
training step calls it once; validation, test and inference never do (they use the front end
alone), so evaluation is never augmented. The order:

1. waveform, at the rate the audio arrives at (44.1 kHz, or 32 kHz from the audio cache):
   a. roll: each clip shifted circularly by its own random number of samples (``--roll_sec``);
   b. DIR: clips of ``--dir_devices`` convolved, each with probability ``--dir_p``, with a device
      impulse response drawn at random (``--dir_dir``);
   c. mixup: clips mixed in pairs (``--mixup_alpha``, ``--mixup_p``); after DIR, so that each part
      of a mixture keeps its own device's colour;
2. front end, first half (``frontend.spectrogram``): resampling and the mel power (for PaSST: its
   normalised log-mel);
3. features:
   a. frequency and time masking on that spectrogram (``--freqm``, ``--timem``);
   b. the front end's second half (``frontend.finish``): the log (for PaSST: nothing);
   c. Frequency-MixStyle on the log-mel batch (``--mixstyle_p``, ``--mixstyle_alpha``).

Mixup returns its pairing (``Mix``), with which the losses (``helpers/training/losses.py``) mix the
labels and any other per-clip target (a teacher's soft targets) like the clips. An augmentation that
is off draws no random numbers, so the baseline's seeded runs are unchanged.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from dataset.dcase25 import DEVICES
from dataset.impulse_responses import load_impulse_responses
from helpers.base.errors import DataError


@dataclass
class Mix:
    """How mixup paired one batch: clip i became ``weight[i] * clip i + (1 - weight[i]) * clip partner[i]``.
    Without mixup both are None and nothing is mixed."""
    partner: torch.Tensor | None = None  # [B] long
    weight: torch.Tensor | None = None  # [B] float

    def targets(self, per_clip: torch.Tensor) -> torch.Tensor:
        """Mix any per-clip tensor ``[B, ...]`` (one-hot labels, a teacher's probabilities) like the clips."""
        if self.partner is None:
            return per_clip
        weight = self.weight.to(per_clip.dtype).view(-1, *[1] * (per_clip.dim() - 1))
        return weight * per_clip + (1 - weight) * per_clip[self.partner]


def roll_clips(waveform: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Roll every clip of ``[B, ..., samples]`` circularly in time by its own uniform random integer
    in ``[-max_shift, max_shift]``."""
    if max_shift <= 0:
        return waveform
    n = waveform.shape[-1]
    shifts = torch.randint(-max_shift, max_shift + 1, (waveform.shape[0],), device=waveform.device)
    # rolled[t] = clip[(t - shift) mod n], as torch.roll
    source = (torch.arange(n, device=waveform.device) - shifts[:, None]) % n
    source = source.view(waveform.shape[0], *[1] * (waveform.dim() - 2), n).expand_as(waveform)
    return waveform.gather(-1, source)


def fast_fft_length(n: int) -> int:
    """The smallest length >= ``n`` whose only prime factors are 2, 3 and 5 (fast for FFTs)."""
    while True:
        m = n
        for factor in (2, 3, 5):
            while m % factor == 0:
                m //= factor
        if m == 1:
            return n
        n += 1


def to_device(indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without waiting for it: copied from pinned memory on a GPU."""
    if device.type == "cuda" and torch.cuda.is_available():
        indices = indices.pin_memory()
    return indices.to(device, non_blocking=True)


def convolve_devices(waveform: torch.Tensor, devices, responses: torch.Tensor, p: float, dir_devices) -> torch.Tensor:
    """DIR: each clip of ``dir_devices`` is, with probability ``p``, convolved with one of ``responses``
    ``[n, length]`` drawn at random; "full" convolution cut to the clip's length. On the whole batch.
    The clips and responses are chosen on the CPU (the devices are strings there), so that which clips
    are convolved is known without asking the accelerator."""
    if p <= 0:
        return waveform
    batch = waveform.shape[0]
    eligible = torch.tensor([d in dir_devices for d in devices])
    chosen = eligible & (torch.rand(batch) < p)
    which = torch.randint(len(responses), (batch,))
    rows = chosen.nonzero()[:, 0]
    if len(rows) == 0:
        return waveform
    rows_on_device = to_device(rows, waveform.device)
    clips = waveform.index_select(0, rows_on_device).float()  # [k, ..., samples]
    kernels = responses.index_select(0, to_device(which[rows], responses.device)).float()
    kernels = kernels.view(clips.shape[0], *[1] * (clips.dim() - 2), -1)
    # zeros after a response change nothing in the first samples; they make the FFT length one with
    # small prime factors, which FFTs compute fast (32000 + 16000 - 1 = 47999 = 7 * 6857 has a large one)
    full = clips.shape[-1] + kernels.shape[-1] - 1
    kernels = F.pad(kernels, (0, fast_fft_length(full) - full))
    convolved = torchaudio.functional.fftconvolve(clips, kernels, mode="full")[..., :waveform.shape[-1]]
    return waveform.index_copy(0, rows_on_device, convolved.to(waveform.dtype))


def mixup(waveform: torch.Tensor, alpha: float, p: float) -> tuple:
    """Pair every clip with a random clip of the batch; with probability ``p`` a clip is mixed with
    its partner, weight ~ Beta(alpha, alpha) (1: unmixed). Returns the mixed batch and the ``Mix``."""
    if alpha <= 0 or p <= 0:
        return waveform, Mix()
    batch, device = waveform.shape[0], waveform.device
    # made and checked on the device without a copy from the host (torch.full; no argument validation)
    concentration = torch.full((), float(alpha), device=device)
    weight = torch.distributions.Beta(concentration, concentration, validate_args=False).sample((batch,))
    weight = torch.where(torch.rand(batch, device=device) < p, weight, torch.ones_like(weight))
    partner = torch.randperm(batch, device=device)
    mix = Mix(partner, weight)
    return mix.targets(waveform), mix


def mixstyle(x: torch.Tensor, p: float = 0.4, alpha: float = 0.3, eps: float = 1e-6) -> torch.Tensor:
    """Frequency-MixStyle: with probability ``p``, mix each sample's per-frequency statistics with
    those of another sample of the batch, so the model relies less on a device's frequency response.

    ``x`` is a log-mel batch ``[B, C, F, T]``; statistics are taken over channels and time.
    """
    if p <= 0 or torch.rand(()) > p:  # drawn on the CPU: the decision needs nothing from the accelerator
        return x
    batch_size = x.size(0)
    mean = x.mean(dim=(1, 3), keepdim=True).detach()
    sigma = (x.var(dim=(1, 3), keepdim=True) + eps).sqrt().detach()
    normalised = (x - mean) / sigma
    concentration = torch.full((), float(alpha), device=x.device)  # drawn where x is: no copy from the host
    lam = torch.distributions.Beta(concentration, concentration, validate_args=False).sample(
        (batch_size, 1, 1, 1)).to(x.dtype)
    perm = torch.randperm(batch_size, device=x.device)
    mixed_mean = mean * lam + mean[perm] * (1 - lam)
    mixed_sigma = sigma * lam + sigma[perm] * (1 - lam)
    return normalised * mixed_sigma + mixed_mean


def check_augmentation_flags(config) -> None:
    """The augmentation flags make sense together; otherwise a DataError naming the flag."""
    for flag in ("dir_p", "mixup_p"):
        value = getattr(config, flag, 0.0)
        if not 0.0 <= value <= 1.0:
            raise DataError(f"--{flag} {value}: a probability lies between 0 and 1.")
    if getattr(config, "mixup_alpha", 0.0) < 0:
        raise DataError(f"--mixup_alpha {config.mixup_alpha}: the Beta parameter must be positive (0 turns mixup off).")
    if getattr(config, "dir_p", 0.0) > 0 and not getattr(config, "dir_dir", None):
        raise DataError(f"--dir_p {config.dir_p} needs --dir_dir FOLDER, the folder of impulse responses "
                        "(e.g. the MicIRP wav files; see docs/augmentation.md).")
    unknown = [d for d in getattr(config, "dir_devices", ["a"]) if d not in DEVICES]
    if unknown:
        raise DataError(f"--dir_devices: unknown device {unknown[0]}; the devices are {', '.join(DEVICES)}.")


class TrainingAugmentation(nn.Module):
    """The training batch's way from waveforms to features, in the order of the module docstring.

    ``responses`` ``[n, length]`` are the DIR impulse responses at the input rate (a buffer, so they
    move to the accelerator with the module; not saved in checkpoints).
    """

    def __init__(self, roll_samples=0, freqm=48, timem=0, mixstyle_p=0.4, mixstyle_alpha=0.3,
                 responses=None, dir_p=0.0, dir_devices=("a",), mixup_alpha=0.0, mixup_p=1.0):
        super().__init__()
        self.roll_samples = roll_samples
        self.register_buffer("responses", responses if responses is not None else torch.zeros(0, 1),
                             persistent=False)
        self.dir_p = dir_p if responses is not None else 0.0
        self.dir_devices = tuple(dir_devices)
        self.mixup_alpha, self.mixup_p = mixup_alpha, mixup_p
        self.masking = nn.Sequential(
            torchaudio.transforms.FrequencyMasking(freqm, iid_masks=True),
            torchaudio.transforms.TimeMasking(timem, iid_masks=True),
        )
        self.mixstyle_p, self.mixstyle_alpha = mixstyle_p, mixstyle_alpha

    @classmethod
    def from_args(cls, config, input_sample_rate: int) -> "TrainingAugmentation":
        """From the flags; ``input_sample_rate`` is the rate the audio arrives at (it sets the roll range
        in samples and the rate the impulse responses are resampled to)."""
        check_augmentation_flags(config)
        dir_p = getattr(config, "dir_p", 0.0)
        responses = load_impulse_responses(config.dir_dir, input_sample_rate)[0] if dir_p > 0 else None
        return cls(roll_samples=int(input_sample_rate * config.roll_sec), freqm=config.freqm, timem=config.timem,
                   mixstyle_p=config.mixstyle_p, mixstyle_alpha=config.mixstyle_alpha, responses=responses,
                   dir_p=dir_p, dir_devices=getattr(config, "dir_devices", ["a"]),
                   mixup_alpha=getattr(config, "mixup_alpha", 0.0), mixup_p=getattr(config, "mixup_p", 1.0))

    def forward(self, waveform: torch.Tensor, devices, frontend) -> tuple:
        """``(features, mix)`` for a training batch ``[B, 1, samples]`` recorded by ``devices``."""
        waveform = roll_clips(waveform, self.roll_samples)
        waveform = convolve_devices(waveform, devices, self.responses, self.dir_p, self.dir_devices)
        waveform, mix = mixup(waveform, self.mixup_alpha, self.mixup_p)
        features = frontend.finish(self.masking(frontend.spectrogram(waveform)))
        return mixstyle(features, self.mixstyle_p, self.mixstyle_alpha), mix
