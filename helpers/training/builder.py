"""The parts of a training module, made from a run's configuration (its flags): the network, its front end,
the training augmentation and the training settings. ``build_module`` hands them to ``SceneClassifier``."""
import torch
from lightning.fabric.utilities.data import AttributeDict

from helpers.training.augmentation import TrainingAugmentation
from helpers.training.module import SceneClassifier, TrainingSettings
from models.quantization import with_quantization
from models.registry import DEFAULT_NETWORK, build_frontend, build_network


def build_parts(config: dict, model: torch.nn.Module = None, input_sample_rate: int = None) -> dict:
    """``{"model", "frontend", "augment", "settings"}`` for ``config``. ``model`` defaults to a fresh network
    of ``--model`` and its flags (prepared for ``--quantize``); the front end is that network's own, for
    audio at ``input_sample_rate`` (default ``orig_sample_rate``; the audio cache is resampled already)."""
    config = AttributeDict(config)
    if model is None:
        model = with_quantization(build_network(config.get("model") or DEFAULT_NETWORK, dict(config)),
                                  config.get("quantize"))
    network = getattr(model, "base_model", model)
    name = getattr(network, "network_name", config.get("model") or DEFAULT_NETWORK)
    rate = input_sample_rate or config.orig_sample_rate
    return {"model": model, "frontend": build_frontend(name, dict(config), input_sample_rate),
            "augment": TrainingAugmentation.from_args(config, rate), "settings": TrainingSettings.from_config(config)}


def build_module(config: dict, model: torch.nn.Module = None, log_prefix: str = "", input_sample_rate: int = None,
                 teacher=None):
    """A ``SceneClassifier`` of ``config``'s parts (``build_parts``); ``config`` is saved with its checkpoints."""
    return SceneClassifier(**build_parts(config, model, input_sample_rate), config=config, log_prefix=log_prefix,
                           teacher=teacher)
