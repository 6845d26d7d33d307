"""PaSST, the patchout spectrogram transformer of Koutini et al., pretrained on AudioSet: the teacher of
the top systems (85 million parameters, far over the complexity limits: never a submission).

Built on the authors' package ``hear21passt`` (its network and its front end). The package is imported
only where a PaSST or its front end is built, so that importing ``models/`` (the exported submission
package included) never needs it. Its console output (the whole model and the tensor shapes of the
first forward pass) and its warnings about deprecated torch calls are kept off the console.

``pretrained`` chooses the starting weights when a run starts (``load_pretrained_weights``): ``audioset``,
the authors' PaSST-S (``passt_s_swa_p16_128_ap476``, mAP .476), downloaded once into the torch hub cache;
``none``, random initialisation; or the path of a weights file in the authors' layout. The AudioSet head
(527 classes) is replaced by a new one of ``n_classes``; a network rebuilt from a checkpoint gets the
checkpoint's weights instead.
"""
import contextlib
import functools
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio
from torch import nn

from models.frontend import full_precision
from models.registry import NetworkError, flag, register_network

ARCHITECTURE = "passt_s_swa_p16_128_ap476"
WEIGHTS_URL = "https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt"
HEADS = ("head.", "head_dist.")  # the classifier heads, replaced when their number of classes differs
INSTALL = ("pip install hear21passt==0.0.26 torchvision==0.26.0 torch==2.11.0 torchaudio==2.11.0 "
           "(torch and torchaudio held at their pair; see requirements.txt)")
# the package's front end, as the DCASE 2023 PaSST teachers were trained with it (CPJKU)
SAMPLE_RATE, N_MELS, WINDOW, HOP, N_FFT = 32000, 128, 800, 320, 1024
FMAX, FMAX_AUG_RANGE = 15500, 1000  # the package's fmax for fmax=None and this range, given explicitly
PACKAGE_WARNINGS = (r"stft with return_complex=False is deprecated", r".*torch\.cuda\.amp\.autocast",
                    r"Input image size .* doesn't match model")


def _package():
    """``hear21passt`` with its printing switched off, or a NetworkError that says how to install it."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import hear21passt.models.passt as passt
            import hear21passt.models.preprocess as preprocess
    except ImportError as err:
        raise NetworkError(f"--model passt needs the authors' package hear21passt ({err}): {INSTALL}.") from err
    passt.first_RUN = False  # otherwise the first forward pass prints the shapes of its tensors
    return passt, preprocess


@contextlib.contextmanager
def _quiet():
    """The package's prints and its warnings about torch calls it uses, kept off the console."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        for message in PACKAGE_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


_build_mel_banks = torchaudio.compliance.kaldi.get_mel_banks


@functools.lru_cache(maxsize=FMAX_AUG_RANGE + 1)
def _mel_banks(*args, **kwargs) -> tuple:
    return _build_mel_banks(*args, **kwargs)


@contextlib.contextmanager
def _cached_mel_banks():
    """The package rebuilds its mel filterbank on the CPU in every forward pass (one of about a thousand
    highest frequencies in training): within this block each one is built once and then copied."""
    kaldi = torchaudio.compliance.kaldi
    kaldi.get_mel_banks = lambda *args, **kwargs: tuple(t.clone() for t in _mel_banks(*args, **kwargs))
    try:
        yield
    finally:
        kaldi.get_mel_banks = _build_mel_banks


class PaSSTFrontEnd(nn.Module):
    """Waveform ``[B, 1, samples]`` at ``orig_sample_rate`` -> the package's log-mel ``[B, 1, 128, frames]``
    (32 kHz, window 800, hop 320, n_fft 1024, pre-emphasis, ``(log(mel + 1e-5) + 4.5) / 5``); in training
    the package varies the highest mel frequency, as its teachers were trained. Masking acts on these
    features (``spectrogram``); ``finish`` has nothing left to do. Computes in float32 under any autocast."""

    def __init__(self, orig_sample_rate: int = 44100):
        super().__init__()
        _, preprocess = _package()
        self.sample_rate = SAMPLE_RATE
        self.resample = torchaudio.transforms.Resample(orig_freq=orig_sample_rate, new_freq=SAMPLE_RATE)
        with _quiet():
            self.mel = preprocess.AugmentMelSTFT(n_mels=N_MELS, sr=SAMPLE_RATE, win_length=WINDOW, hopsize=HOP,
                                                 n_fft=N_FFT, freqm=0, timem=0, fmin=0.0, fmax=FMAX,
                                                 fmin_aug_range=1, fmax_aug_range=FMAX_AUG_RANGE)

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() == 3:  # [B, 1, samples] -> [B, samples]
            waveform = waveform[:, 0]
        with _quiet(), _cached_mel_banks(), full_precision(waveform):  # float32 under any autocast
            return self.mel(self.resample(waveform.float())).unsqueeze(1)

    @staticmethod
    def finish(spectrogram: torch.Tensor) -> torch.Tensor:
        return spectrogram

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.finish(self.spectrogram(waveform))

    def input_shape(self, seconds: float = 1.0) -> tuple:
        """The network's input shape for one clip of ``seconds``."""
        with torch.no_grad():
            return tuple(self.eval()(torch.zeros(1, 1, int(seconds * self.resample.orig_freq))).shape)


@dataclass
class PaSSTConfig:
    n_classes: int = flag(10, "number of classes")
    pretrained: str = flag("audioset", "starting weights: audioset (the authors' AudioSet weights, downloaded "
                                       "once), none (random), or the path of a weights file in the authors' layout")
    s_patchout_t: int = flag(0, "structured patchout: time columns of patches dropped in training")
    s_patchout_f: int = flag(6, "structured patchout: frequency rows of patches dropped in training")


@register_network("passt", PaSSTConfig)
class PaSST(nn.Module):
    """PaSST-S on the features of ``PaSSTFrontEnd`` ``[B, 1, 128, frames]`` -> logits ``[B, n_classes]``
    (the authors' network returns them with its embeddings; only the logits are kept). The state dict is
    the authors' under the prefix ``net.``."""

    state_dict_anchor = "net.freq_new_pos_embed"  # PaSST's own entry (building one to learn its first takes seconds)
    role = "teacher"  # said when a run starts: far over the limits by design
    # the published PaSST teacher recipes (CPJKU 2023, Li_NTU 2025): 25 epochs, batch 80, lr 1e-5, about three
    # epochs of warm-up, Freq-MixStyle p 0.4 (alpha 0.4), DIR p 0.6, weight decay 1e-3, time masks of 20
    # frames; stage 2 (no published recipe, this project's choice): the same rate, 10 epochs per device
    training_defaults = {
        "base": dict(n_epochs=25, batch_size=80, lr=1e-5, warmup_steps=1300, weight_decay=1e-3, mixstyle_p=0.4,
                     mixstyle_alpha=0.4, dir_p=0.6, timem=20),
        "device": dict(n_epochs=10, batch_size=80, lr=1e-5, warmup_steps=100, weight_decay=1e-3, dir_p=0.6,
                       timem=20),
    }

    def __init__(self, config: PaSSTConfig = None):
        super().__init__()
        self.config = config or PaSSTConfig()
        passt, _ = _package()
        with _quiet():  # the package prints the whole model
            self.net = passt.get_model(arch=ARCHITECTURE, pretrained=False, n_classes=self.config.n_classes,
                                       in_channels=1, fstride=10, tstride=10, input_fdim=N_MELS, input_tdim=998,
                                       s_patchout_t=self.config.s_patchout_t, s_patchout_f=self.config.s_patchout_f)

    @classmethod
    def frontend(cls, settings: dict, input_sample_rate: int) -> nn.Module:
        return PaSSTFrontEnd(input_sample_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _quiet():
            logits, _ = self.net(x)
        return logits

    def load_pretrained_weights(self) -> str:
        """Load the starting weights ``config.pretrained`` names; returns what was loaded, in one line."""
        choice = self.config.pretrained
        if choice == "none":
            return "PaSST starts from random weights (--pretrained none)."
        path = download_weights() if choice == "audioset" else Path(choice).expanduser()
        if not path.is_file():
            raise NetworkError(f"--pretrained {choice}: no such file. Give audioset, none, or the path of a PaSST "
                               "weights file in the authors' layout.")
        replaced = load_authors_weights(self.net, read_weights(path), path)
        heads = f"; new {self.config.n_classes}-class heads ({', '.join(replaced)})" if replaced else ""
        return f"PaSST starts from {path}{heads}."


def download_weights() -> Path:
    """The AudioSet weights in the torch hub cache, downloaded with a progress bar the first time; without
    network a NetworkError names the file, its address and the folder to put it in."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / WEIGHTS_URL.rsplit("/", 1)[1]
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(WEIGHTS_URL, str(path), progress=True)  # a temporary file, then renamed
    except Exception as err:  # URLError, OSError, HTTP errors: the file is not there
        raise NetworkError(f"The AudioSet weights of PaSST, {path.name}, could not be downloaded from {WEIGHTS_URL} "
                           f"({type(err).__name__}: {err}). Download the file on a machine with internet access "
                           f"and put it into {folder}/ (or pass --pretrained FILE, or --pretrained none for "
                           "random weights).") from err
    return path


def read_weights(path) -> dict:
    """A state dict from a weights file, read without running code stored in it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise NetworkError(f"--pretrained {path}: not a weights file torch can read safely "
                           f"({type(err).__name__}: {err}).") from err
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NetworkError(f"--pretrained {path}: holds no state dict of tensors.")
    if state and all(key.startswith("net.") for key in state):  # this project's own PaSST state dict
        state = {key[len("net."):]: value for key, value in state.items()}
    return state


def load_authors_weights(net: nn.Module, state: dict, path) -> list:
    """Load ``state`` (the authors' layout) into ``net`` strictly, except the classifier heads when their
    shapes differ (527 AudioSet classes): those keep their new initialisation. Returns the replaced keys;
    a file that does not fit is refused, naming the keys and shapes that differ."""
    expected = net.state_dict()
    replaced = [k for k in expected if k.startswith(HEADS) and k in state and state[k].shape != expected[k].shape]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})" for k in expected
              if k in state and k not in replaced and state[k].shape != expected[k].shape]
    problems = ([f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")] if missing else [])
    problems += [f"not in PaSST: {', '.join(unexpected[:5])}" + (" ..." if len(unexpected) > 5 else "")
                 ] if unexpected else []
    problems += [f"other shapes: {'; '.join(shapes[:5])}"] if shapes else []
    if problems:
        raise NetworkError(f"--pretrained {path} does not fit {ARCHITECTURE}: " + "; ".join(problems) + ".")
    net.load_state_dict({k: v for k, v in state.items() if k not in replaced}, strict=False)
    return replaced
