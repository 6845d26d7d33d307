"""Finding and reading checkpoints: this project's and the organisers' Lightning checkpoints."""
import argparse
import os
from pathlib import Path

import torch

from helpers.cli import given_network_flags, network_flags
from helpers.files import atomic_path
from models.quantization import is_qat_state, with_quantization
from models.registry import DEFAULT_NETWORK, build_network, network_record
# prefixes of the general model and of the device container in Lightning checkpoints
GENERAL_PREFIXES = ("model.",)
CONTAINER_PREFIXES = ("model.", "multi_device_model.")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or used; the message says which and what to do."""


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


def load_checkpoint(path) -> dict:
    """Read a checkpoint without running any code stored in it (``weights_only=True``)."""
    try:
        from lightning.fabric.utilities.data import AttributeDict
        safe = [argparse.Namespace, AttributeDict]
        with torch.serialization.safe_globals(safe):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(f"{path} is not a checkpoint torch can read safely ({type(err).__name__}: {err}). "
                              "Pass a .ckpt written by train_base.py or train_device_specific.py, or one of the "
                              "organisers' baseline checkpoints.") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint of this project or of the organisers' "
                              "baseline (it has no 'state_dict').")
    return checkpoint


def _strip(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def split_state_dict(checkpoint: dict) -> tuple:
    """``("container", state)`` for a stage-2 checkpoint, ``("general", state)`` for a stage-1 one."""
    state_dict = checkpoint["state_dict"]
    for prefix in CONTAINER_PREFIXES:
        container = _strip(state_dict, prefix)
        if any(k.startswith("device_models.") for k in container):
            return "container", container
    for prefix in GENERAL_PREFIXES:
        general = _strip(state_dict, prefix)
        if general:
            return "general", general
    raise CheckpointError("The checkpoint holds no model weights under the prefixes "
                          f"{', '.join(GENERAL_PREFIXES + CONTAINER_PREFIXES)}.")


def hyper_parameters(checkpoint: dict) -> dict:
    saved = checkpoint.get("hyper_parameters") or {}
    return dict(vars(saved)) if isinstance(saved, argparse.Namespace) else dict(saved)


def checkpoint_network(checkpoint: dict, path, args=None) -> torch.nn.Module:
    """A fresh network as the checkpoint describes it: its ``network`` record (name and config);
    without one (the organisers' checkpoints, older ones of this project) the network named by its
    ``model`` hyper-parameter, CP-Mobile if none, built from its hyper-parameters; a checkpoint
    that records neither, from the run's flags. Network flags given in ``args`` must agree. An 8-bit
    network (``quantize`` in the record or the hyper-parameters, or fake-quantised weights) is built
    quantisation-aware, ready for its weights."""
    given = given_network_flags(args) if args is not None else {}
    given_model = getattr(args, "model", None)
    record = checkpoint.get("network")
    saved = hyper_parameters(checkpoint)
    if record:
        name, settings = record["name"], record["config"]
    elif "model" in saved or any(flag in saved for flag in network_flags()):
        name, settings = saved.get("model") or DEFAULT_NETWORK, saved
    else:  # nothing recorded: the run's flags say what the network is
        name, settings = given_model or DEFAULT_NETWORK, given
    try:
        network = build_network(name, settings)
    except (LookupError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its network cannot be built ({err}).") from err
    config = network_record(network)["config"]
    quantize = (record or {}).get("quantize") or saved.get("quantize")
    if quantize or is_qat_state(checkpoint["state_dict"]):
        with_quantization(network, quantize or "int8")
    differ = [f"--model {given_model}"] if given_model not in (None, name) else []
    differ += [f"--{flag} {value}" for flag, value in given.items()
               if flag not in config or _listed(config[flag]) != _listed(value)]
    if differ:
        settings_text = ", ".join(f"{k} {v}" for k, v in config.items() if k in network_flags())
        raise CheckpointError(f"{path} holds the network {name} ({settings_text}); {', '.join(differ)} given here "
                              "does not agree. The network is taken from the checkpoint: leave these flags out.")
    return network


def _listed(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def load_weights(model: torch.nn.Module, state_dict: dict, checkpoint: dict, path) -> None:
    """``load_state_dict(strict=True)``, explaining a mismatch by the network settings that differ."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        saved, record = hyper_parameters(checkpoint), network_record(model)
        differ = [f"--{f} {saved[f]} (the network built here: {v})" for f, v in record["config"].items()
                  if f in saved and _listed(saved[f]) != _listed(v)]
        hint = ("It was trained with " + ", ".join(differ) + "." if differ else
                f"Its weights do not fit the network {record['name']} {record['config']}; a checkpoint that records "
                "no network settings needs the network flags it was trained with.")
        raise CheckpointError(f"{path} does not fit the network. {hint}") from err


def load_general_model(ckpt_path, args=None, quantize=None):
    """``(model, trained_8bit)``: the general model of a stage-1 checkpoint (its network rebuilt from
    the checkpoint, see ``checkpoint_network``), ready for training with ``quantize``: an 8-bit
    (quantisation-aware) model as it was, a float model prepared for quantisation-aware training from
    its float weights when ``quantize`` is given."""
    checkpoint = load_checkpoint(ckpt_path)
    kind, state = split_state_dict(checkpoint)
    if kind != "general":
        raise CheckpointError(f"{ckpt_path} is a stage-2 checkpoint; start from a stage-1 run.")
    general = checkpoint_network(checkpoint, ckpt_path, args)
    trained_8bit = is_qat_state(state)
    load_weights(general, state, checkpoint, ckpt_path)
    return with_quantization(general, quantize), trained_8bit


def save_checkpoint(checkpoint: dict, path) -> Path:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def devices_in(state: dict) -> list:
    """The devices that have their own model in a container's state dict, in stored order."""
    return list(dict.fromkeys(k.split(".")[1] for k in state if k.startswith("device_models.")))


def load_device_system(ckpt_id, project_name, args=None, allow_general=False, allow_unfinished=False) -> tuple:
    """``(system, checkpoint, path)``: the device container of a stage-2 run (or ``.ckpt``), its
    network rebuilt from the checkpoint (see ``checkpoint_network``; 8-bit if it was trained so).

    A stage-1 checkpoint becomes a container without device models when ``allow_general``; a
    stage-2 run stopped before its last device is refused unless ``allow_unfinished``."""
    from models.multi_device import MultiDeviceModel

    path = resolve_checkpoint(str(ckpt_id), project_name)
    checkpoint = load_checkpoint(path)
    kind, state = split_state_dict(checkpoint)
    if kind == "general":
        if not allow_general:
            raise CheckpointError(f"{path} holds only a general model (stage 1): use a stage-2 run.")
        state = {f"base_model.{k}": v for k, v in state.items()}
    elif not checkpoint.get("complete", True) and not allow_unfinished:
        run = path.parents[1].name
        raise CheckpointError(f"{path}: run {run} stopped before every device was fine-tuned; "
                              f"finish it first with --resume {run}.")
    system = MultiDeviceModel(checkpoint_network(checkpoint, path, args), devices_in(state))
    load_weights(system, state, checkpoint, path)
    return system, checkpoint, path


def merge_device_runs(run_ids, project_name, args=None):
    """One device container from stage-2 runs that fine-tuned different devices of the same
    general model (independent jobs run in parallel): ``(system, general_checkpoint, devices)``."""
    from models.multi_device import MultiDeviceModel

    network, base_state, general, device_states = None, None, None, {}
    for run_id in run_ids:
        path = resolve_checkpoint(run_id, project_name)
        checkpoint = load_checkpoint(path)
        kind, state = split_state_dict(checkpoint)
        if kind != "container" or not checkpoint.get("complete", False):
            raise CheckpointError(f"--merge {run_id}: {path} is not a finished stage-2 run.")
        base = _strip(state, "base_model.")
        this_network = checkpoint_network(checkpoint, path, args)
        if base_state is None:
            network, base_state, general = this_network, base, checkpoint.get("general_checkpoint")
        elif (network_record(this_network) != network_record(network) or base.keys() != base_state.keys()
              or any(not torch.equal(base[k], base_state[k]) for k in base_state)):
            raise CheckpointError(f"--merge: run {run_id} was fine-tuned from another general model than "
                                  f"{run_ids[0]}; merge only runs started from the same stage-1 run.")
        for device in checkpoint["completed_devices"]:
            if device in device_states:
                raise CheckpointError(f"--merge: device {device} was fine-tuned in more than one of the runs; "
                                      "give each device's run once.")
            device_states[device] = _strip(state, f"device_models.{device}.")
    system = MultiDeviceModel(network, list(device_states))
    system.base_model.load_state_dict(base_state, strict=True)
    for device, state in device_states.items():
        system.device_models[device].load_state_dict(state, strict=True)
    return system, general, list(device_states)
