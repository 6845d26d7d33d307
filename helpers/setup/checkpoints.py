"""Checkpoint files: found by run id or path, read without running code stored in them, written
atomically. What network a checkpoint holds is read by ``helpers.setup.model_loader``."""
import argparse
import os
from pathlib import Path

import torch

from helpers.base.errors import UserError
from helpers.files import atomic_path


class CheckpointError(UserError):
    """A checkpoint that cannot be found or used; the message says which and what to do."""


def checkpoint_dir(project_name, run_id) -> Path:
    return Path(project_name) / run_id / "checkpoints"


def run_dirs(project_name) -> list:
    """Run folders under ``<project_name>/`` that hold a ``last.ckpt``, newest first."""
    found = Path(project_name).glob("*/checkpoints/last.ckpt")
    return [p.parents[1] for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def resolve_checkpoint(ckpt_id: str, project_name: str) -> Path:
    """``--ckpt_id``: a run id (-> ``<project_name>/<id>/checkpoints/last.ckpt``) or a checkpoint path."""
    as_path = Path(ckpt_id).expanduser()
    if as_path.is_file():
        return as_path
    if as_path.suffix == ".ckpt" or os.sep in ckpt_id:
        raise CheckpointError(f"--ckpt_id {ckpt_id}: no such checkpoint file.")
    candidate = Path(project_name) / ckpt_id / "checkpoints" / "last.ckpt"
    if candidate.is_file():
        return candidate
    runs = run_dirs(project_name)
    matches = [run for run in runs if run.name.startswith(ckpt_id)]  # the start of an id is enough
    if len(matches) == 1:
        return matches[0] / "checkpoints" / "last.ckpt"
    if matches:
        raise CheckpointError(f"--ckpt_id {ckpt_id} matches several runs under {project_name}/: "
                              f"{', '.join(r.name for r in matches)}. Give more of the run id.")
    listing = (f"Runs with a checkpoint under {project_name}/ (newest first): " + ", ".join(r.name for r in runs)
               if runs else f"No run under {project_name}/ has a checkpoint yet.")
    raise CheckpointError(f"--ckpt_id {ckpt_id}: {candidate} does not exist. {listing}. "
                          "Pass one of these ids (with the same --project_name) or the path of a .ckpt file.")


def run_of_checkpoint(path):
    """The run id of a run's checkpoint, ``<project_name>/<run id>/checkpoints/last.ckpt``; None for a
    checkpoint file anywhere else."""
    path = Path(path)
    if path.name == "last.ckpt" and path.parent.name == "checkpoints":
        return path.parents[1].name
    return None


def _tensors(tree: dict, prefix: str = "") -> dict:
    """The tensors of nested dicts as one flat state dict (``{"model": {"w": t}}`` -> ``{"model.w": t}``)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, torch.Tensor):
            flat[f"{prefix}{key}"] = value
        elif isinstance(value, dict):
            flat.update(_tensors(value, f"{prefix}{key}."))
    return flat


def load_checkpoint(path, mmap: bool = False) -> dict:
    """Read a checkpoint without running any code stored in it (``weights_only=True``); ``mmap`` maps the
    tensors instead of reading them (for a look at what the checkpoint records). A Lightning checkpoint
    keeps its ``state_dict``; any other dict (a plain ``torch.save`` of a state dict or of nested dicts)
    becomes ``{"state_dict": <its tensors, flattened>}``."""
    try:
        from lightning.fabric.utilities.data import AttributeDict
        safe = [argparse.Namespace, AttributeDict]
        with torch.serialization.safe_globals(safe):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(_unreadable_message(path, err)) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a dict of weights: save the "
                              "model's state_dict() (a dict), or pass a Lightning checkpoint.")
    if "state_dict" not in checkpoint:
        checkpoint = {"state_dict": _tensors(checkpoint)}
    if not checkpoint["state_dict"]:
        raise CheckpointError(f"{path} holds no weights (no tensors in it).")
    return checkpoint


def _unreadable_message(path, err) -> str:
    """Why ``path`` could not be read safely and what to do; for a file that holds objects the safe reader
    refuses (a config object of another code base), which they are."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a torch file at all
        unsafe = []
    if unsafe:
        return (f"{path} holds Python objects the safe reader does not load ({', '.join(unsafe[:3])}): loading "
                "them would run code stored in the file. If you trust the file, keep only its weights and pass "
                "the new file: python -c \"import torch; c = torch.load('IN', weights_only=False); s = "
                "c.get('state_dict', c); torch.save({k: v for k, v in s.items() if torch.is_tensor(v)}, 'OUT.ckpt')\" "
                "(the network's settings are then read from the weights' shapes).")
    return (f"{path} is not a checkpoint torch can read safely ({type(err).__name__}: {err}). Pass a .ckpt "
            "written by train_base.py or train_device_specific.py, one of the organisers' baseline checkpoints, "
            "or a file written by torch.save(model.state_dict()).")


def recorded_network(path):
    """The name of the network a checkpoint records (this project's record, else its ``model`` flag, else
    CP-Mobile for a checkpoint of the organisers), read without loading the weights; None if unreadable."""
    try:
        checkpoint = load_checkpoint(path, mmap=True)
    except CheckpointError:
        return None
    return (checkpoint.get("network") or {}).get("name") or hyper_parameters(checkpoint).get("model") or "cp_mobile"


# parsing state that checkpoints of earlier versions saved among the flags
EARLIER_NON_FLAGS = ("_stage", "_given_flags", "_training_defaults", "_training_defaults_of")


def hyper_parameters(checkpoint: dict) -> dict:
    """The flags a checkpoint saved (without what earlier versions saved beside them)."""
    saved = checkpoint.get("hyper_parameters") or {}
    saved = dict(vars(saved)) if isinstance(saved, argparse.Namespace) else dict(saved)
    return {k: v for k, v in saved.items() if k not in EARLIER_NON_FLAGS}


def save_checkpoint(checkpoint: dict, path) -> Path:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)
