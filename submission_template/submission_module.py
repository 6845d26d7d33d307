"""DCASE 2025 Task 1, submission __SUBMISSION_LABEL__ index __SUBMISSION_INDEX__: the organisers' inference interface.

A general model plus one fine-tuned copy per training device (the network named in the packaged
settings); each clip goes through its device's model, every other device id (s4, s5, s6,
"unknown", ...) through the general model.
Parameters are stored as 16-bit floats, the inputs are 16-bit log-mel features. On a GPU the models
run in half precision; on a CPU a copy of each computes it in 32 bits on the same 16-bit values
(models/inference.py). An 8-bit system (``"quantize": "int8"`` in its settings) stores its
convolution weights as int8 parameters, with 16-bit per-channel scales and biases, and computes in
32 bits (models/quantization.py).

Written by ``export_submission.py`` of the DCASE 2025 Task 1 reference training system.
"""
import json
from collections import defaultdict
from importlib import resources
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .dataset.audio import load_audio
from .models.frontend import LogMelFrontEnd
from .models.multi_device import MultiDeviceModel
from .models.inference import infer
from .models.quantization import int8_network, is_qat_state, prepare_qat, quantize_to_int8
from .models.registry import build_network

SUBMISSION_LABEL = "__SUBMISSION_LABEL__"
SUBMISSION_INDEX = __SUBMISSION_INDEX__
MODULE_NAME = f"{SUBMISSION_LABEL}_{SUBMISSION_INDEX}"
PACKAGE = __package__ or SUBMISSION_LABEL

# network and front-end settings of the exported run, class order and device list (packaged, no download)
CONFIG = json.loads((resources.files(PACKAGE) / "ckpts" / f"{MODULE_NAME}.json").read_text())
CLASSES = list(CONFIG["classes"])
FEATURE_BATCH = 64  # clips per batch in the front end


class SubmissionModel(nn.Module):
    """Front end (float32) and the device container (16-bit parameters; int8 convolution weights for
    an 8-bit system)."""

    def __init__(self, config: dict, devices: List[str]):
        super().__init__()
        self.config = config
        self.class_order = list(config["classes"])
        self.devices = list(devices)
        self.frontend = LogMelFrontEnd(**config["frontend"]).eval()
        network = build_network(config["network"]["name"], config["network"]["config"])
        if config["network"].get("quantize"):
            network = int8_network(network)
        self.model = MultiDeviceModel(network, self.devices)
        # front ends for files at other sample rates, made when needed; submodules, so that .to() moves them
        self.other_frontends = nn.ModuleDict()

    def frontend_for(self, sample_rate: int) -> nn.Module:
        """The log-mel front end for audio at ``sample_rate``: resampled from its own rate."""
        if sample_rate == self.config["frontend"]["orig_sample_rate"]:
            return self.frontend
        key = str(sample_rate)
        if key not in self.other_frontends:
            settings = dict(self.config["frontend"], orig_sample_rate=sample_rate)
            device = next(self.frontend.buffers()).device
            self.other_frontends[key] = LogMelFrontEnd(**settings).eval().to(device)
        return self.other_frontends[key]

    @torch.no_grad()
    def features(self, waveform: Tensor, sample_rate: int) -> Tensor:
        """``[B, 1, samples]`` at ``sample_rate`` -> 16-bit log-mel ``[B, 1, n_mels, frames]``."""
        device = next(self.frontend.buffers()).device
        return self.frontend_for(sample_rate)(waveform.to(device)).half()

    @torch.no_grad()
    def forward(self, features: Tensor, device_ids: List[str]) -> Tensor:
        """16-bit log-mel features ``[B, 1, n_mels, frames]`` -> float32 logits ``[B, n_classes]`` in
        input order; the clips of each model are computed together."""
        device = next(self.model.parameters()).device
        features = features.to(device=device, dtype=torch.float16)
        return self.model(features, [str(d) for d in device_ids], compute=infer).cpu()


def _read_state_dict(path) -> dict:
    """The container's state dict from the packaged file, or from a stage-2 (or stage-1) checkpoint
    of the training system; read with ``weights_only=True`` (no code in the file is run)."""
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise RuntimeError(f"{path} could not be read as a checkpoint ({type(err).__name__}: {err})") from err
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise RuntimeError(f"{path} holds no state dict.")
    for prefix in ("", "model.", "multi_device_model."):
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if any(k.startswith("base_model.") for k in stripped):
            return {k: v for k, v in stripped.items() if k.startswith(("base_model.", "device_models."))}
    general = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if general:  # a general model alone: every device uses it
        return {f"base_model.{k}": v for k, v in general.items()}
    raise RuntimeError(f"{path} holds neither a device container (base_model.*, device_models.<device>.*) "
                       "nor a general model (model.*).")


def load_model(model_file_path: Optional[str] = None) -> SubmissionModel:
    """The model with its parameters as stored (16-bit; int8 convolution weights for an 8-bit system),
    in eval mode, on the CPU.

    ``model_file_path``: None for the packaged checkpoint; otherwise a file with the same network
    (this package's format, or a checkpoint of the training system)."""
    if model_file_path is None:
        with resources.as_file(resources.files(PACKAGE) / "ckpts" / f"{MODULE_NAME}.pt") as path:
            state = _read_state_dict(path)
    else:
        state = _read_state_dict(model_file_path)
    devices = list(dict.fromkeys(k.split(".")[1] for k in state if k.startswith("device_models.")))
    model = SubmissionModel(CONFIG, devices)
    if CONFIG["network"].get("quantize") and is_qat_state(state):  # a quantisation-aware training checkpoint
        network = prepare_qat(build_network(CONFIG["network"]["name"], CONFIG["network"]["config"]))
        trained = MultiDeviceModel(network, devices)
        trained.load_state_dict(state, strict=True)
        state = quantize_to_int8(trained).state_dict()
    model.model.load_state_dict(state, strict=True)
    model.model.half()  # 16-bit parameters (int8 ones stay int8), as the memory limit counts them
    return model.eval()


def load_inputs(file_paths: List[str], device_ids: List[str], model: SubmissionModel) -> List[Tensor]:
    """Model-ready inputs: one 16-bit log-mel tensor ``[1, 1, n_mels, frames]`` per file, in input order.

    Files at the training rate are resampled exactly as in training; files at other rates from
    their own rate. Clips of equal rate and length share a front-end batch."""
    if len(file_paths) != len(device_ids):
        raise ValueError(f"{len(file_paths)} files but {len(device_ids)} device ids.")
    inputs = [None] * len(file_paths)
    groups = defaultdict(list)
    waveforms = []
    for i, path in enumerate(file_paths):
        waveform, rate = load_audio(path)
        waveforms.append(waveform)
        groups[(rate, waveform.shape[-1])].append(i)
    for (rate, _), rows in groups.items():
        for start in range(0, len(rows), FEATURE_BATCH):
            chunk = rows[start:start + FEATURE_BATCH]
            batch = torch.stack([waveforms[i] for i in chunk])  # [B, 1, samples]
            features = model.features(batch, rate).cpu()
            for i, feature in zip(chunk, features):
                inputs[i] = feature.unsqueeze(0)
    return inputs


def get_model_for_device(model: SubmissionModel, device_id: str) -> nn.Module:
    """The network that handles ``device_id``: its own fine-tuned model, or the general model for
    any device without one (s4, s5, s6, "unknown", ...). Parameters as stored: 16-bit."""
    return model.model.get_model_for_device(str(device_id))


def predict(file_paths: List[str], device_ids: List[str], model_file_path: Optional[str] = None,
            use_cuda: bool = True, batch_size: int = 64) -> Tuple[List[Tensor], List[str]]:
    """Logits (float32 ``[n_classes]``) for every file in input order, and the class order.

    Files are grouped by the model of their device and run in batches of ``batch_size``."""
    file_paths = [str(p) for p in file_paths]
    device_ids = [str(d) for d in device_ids]
    if len(file_paths) != len(device_ids):
        raise ValueError(f"{len(file_paths)} files but {len(device_ids)} device ids.")
    device = torch.device("cuda" if use_cuda and torch.cuda.is_available() else "cpu")
    model = load_model(model_file_path).to(device)
    inputs = load_inputs(file_paths, device_ids, model)

    groups = defaultdict(list)  # (model, input shape) -> file indices
    for i, (features, device_id) in enumerate(zip(inputs, device_ids)):
        groups[(id(get_model_for_device(model, device_id)), tuple(features.shape))].append(i)
    outputs = [None] * len(file_paths)
    for rows in groups.values():
        network = get_model_for_device(model, device_ids[rows[0]])
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            logits = infer(network, torch.cat([inputs[i] for i in chunk]).to(device)).cpu()
            for i, row in zip(chunk, logits):
                outputs[i] = row.clone()
    return outputs, list(model.class_order)


def result_figures(title: str, confusion: dict, classes: List[str], devices: List[str], device_groups: dict) -> dict:
    """Figures of a test (confusion matrix, class x device accuracy map) from confusion counts, drawn
    by the training system's plotting module; raises ImportError without matplotlib."""
    from .helpers.outputs.drawing import result_figures as draw  # imported here: matplotlib is optional at inference
    return draw(title, confusion, classes, devices, device_groups)
