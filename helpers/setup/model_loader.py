"""The one loader of networks from checkpoints: stage 2, ``--evaluate``, ``--init_ckpt``, teacher logits and
the export all read checkpoints here.

A checkpoint this project wrote records its network under ``network`` (``{"name", "config"}`` and, for an
8-bit one, ``quantize``): it is read as record -> build -> strict load, the network where this project
puts it (``model.``: a general model, or a container's ``model.base_model.`` beside
``model.device_models.<device>.``). A checkpoint without the record comes from another code base: where
its networks sit and which settings build them is ``helpers/setup/foreign_checkpoints.py``'s job.

Network settings the caller expects (``expected``: the network flags written on a command line) must
agree with the checkpoint's network; ``prefix`` (``--ckpt_prefix``) picks one of several networks.
"""
import torch

from dataset.dcase25 import DEVICES
from helpers.setup.checkpoints import CheckpointError, hyper_parameters, load_checkpoint, resolve_checkpoint
from helpers.setup.console import rank_zero_print
from helpers.setup.foreign_checkpoints import (
    Located,
    System,
    as_prefix,
    choose_system,
    foreign_settings,
    network_entries,
    shapes,
    shown,
)
from models.multi_device import MultiDeviceModel
from models.quantization import is_qat_state, with_quantization
from models.registry import build_network, network_record


def project_record(checkpoint: dict):
    """The network record of a checkpoint this project wrote (``{"name", "config"}``), else None."""
    record = checkpoint.get("network")
    return record if isinstance(record, dict) and {"name", "config"} <= record.keys() else None


def own_system(state: dict, name: str) -> System:
    """The network of a checkpoint this project wrote, where the project puts it: under ``model.`` (the
    LightningModule's network), or at the top (the predictions' ``model_state_dict.pt``); a container's
    general model as ``base_model.`` beside ``device_models.<device>.``."""
    root = "model." if any(k.startswith("model.") for k in state) else ""
    container = any(k.startswith(root + "base_model.") for k in state)
    general = root + "base_model." if container else root
    group = root + "device_models."
    devices = dict.fromkeys(k[len(group):].split(".")[0] for k in state if k.startswith(group)) if container else {}

    def under(prefix):
        return Located(prefix, name, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return System(root, under(general), {device: under(f"{group}{device}.") for device in devices})


def _chosen_own_system(state: dict, path, name: str, prefix) -> System:
    system = own_system(state, name)
    if prefix is not None and as_prefix(prefix) not in (system.prefix, system.general.prefix):
        raise CheckpointError(f"--ckpt_prefix {prefix}: {path} holds no network there. It holds: "
                              f"{system.describe()}.")
    return system


def _ignored_entries(state: dict, system: System) -> str:
    """``"12 entries under teacher_model., 2 under mel."``: the entries outside the system taken."""
    taken = [system.general.prefix] + [d.prefix for d in system.devices.values()]
    counts = {}
    for key in state:
        if not any(key.startswith(p) for p in taken):
            head = key.split(".")[0] + "." if "." in key else key
            counts[head] = counts.get(head, 0) + 1
    return ", ".join(f"{n} {'entries' if n > 1 else 'entry'} under {head}" for head, n in counts.items())


def _listed(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def check_expected(network, name: str, expected: dict, path) -> None:
    """Refuse (naming both values) a network that differs from the settings (and ``model``) expected."""
    expected = dict(expected or {})
    given_model = expected.pop("model", None)
    config = network_record(network)["config"]
    differ = [f"--model {given_model} given here, the checkpoint holds {name}"] \
        if given_model not in (None, name) else []
    differ += [f"--{flag} {shown(value)} given here, the checkpoint's network has {shown(config.get(flag))}"
               for flag, value in expected.items() if flag not in config or _listed(config[flag]) != _listed(value)]
    if differ:
        raise CheckpointError(f"{path}: {'; '.join(differ)}. The network is taken from the checkpoint: "
                              "leave these flags out.")


def build_checked(name: str, settings: dict, quantize, path, expected=None) -> torch.nn.Module:
    """A fresh network ``name`` of ``settings``, checked against ``expected``, 8-bit (quantisation-aware)
    for ``quantize``; ready for its weights."""
    try:
        network = build_network(name, settings)
    except (LookupError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its network cannot be built ({err}).") from err
    check_expected(network, name, expected, path)
    return with_quantization(network, quantize)


def _mismatch(network: torch.nn.Module, state: dict) -> str:
    """The first entries where ``state`` and ``network`` differ, with names and shapes."""
    own = network.state_dict()
    missing = [(k, v) for k, v in own.items() if k not in state]
    extra = [(k, v) for k, v in state.items() if k not in own]
    differ = [f"{k}: {list(state[k].shape)} in the checkpoint, {list(v.shape)} here" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    parts = ([f"shapes differ: {'; '.join(differ[:3])}"] if differ else []) \
        + ([f"the checkpoint lacks {shapes(missing)}"] if missing else []) \
        + ([f"the network has no {shapes(extra)}"] if extra else [])
    return "; ".join(parts)


def load_weights(model: torch.nn.Module, state: dict, path, what: str = "") -> None:
    """``load_state_dict(strict=True)``; a mismatch names the first entries that differ, with their shapes."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}{what}: the weights do not fit the network {network_record(model)['name']} "
                              f"({_mismatch(model, state)}).") from err


def read_system(ckpt_path, expected: dict = None, prefix=None) -> tuple:
    """``(system, checkpoint, general_prefix)``: the device container the checkpoint holds, weights loaded
    (no device models for a general model alone). ``expected``: network settings the checkpoint's network
    must have; ``prefix``: ``--ckpt_prefix``."""
    checkpoint = load_checkpoint(ckpt_path)
    state, record = checkpoint["state_dict"], project_record(checkpoint)
    if record is None:
        system, general_prefix = _read_foreign_system(checkpoint, ckpt_path, expected, prefix)
        return system, checkpoint, general_prefix
    found = _chosen_own_system(state, ckpt_path, record["name"], prefix)
    _say_ignored(state, found, ckpt_path)
    quantize = record.get("quantize") or ("int8" if is_qat_state(found.general.state) else None)
    general = build_checked(record["name"], record["config"], quantize, ckpt_path, expected)
    system = _with_weights(general, found, ckpt_path, lambda located, network: located.state)
    return system, checkpoint, found.general.prefix


def _read_foreign_system(checkpoint: dict, ckpt_path, expected, prefix) -> tuple:
    """``(system, general_prefix)`` of a checkpoint of another code base (see ``foreign_checkpoints``)."""
    found = choose_system(checkpoint["state_dict"], ckpt_path, prefix)
    _say_ignored(checkpoint["state_dict"], found, ckpt_path)
    settings = foreign_settings(found.general, checkpoint, ckpt_path, expected or {})
    quantize = hyper_parameters(checkpoint).get("quantize") or ("int8" if is_qat_state(found.general.state) else None)
    general = build_checked(found.general.name, settings, quantize, ckpt_path, expected)
    others = [d for d in found.devices.values() if d.name != found.general.name]
    if others:
        raise CheckpointError(f"{ckpt_path}: the device model under {others[0].prefix} is a {others[0].name}, "
                              f"the general model a {found.general.name}; a container holds one network.")
    system = _with_weights(general, found, ckpt_path, lambda located, network: network_entries(network, located.state))
    return system, found.general.prefix


def _say_ignored(state: dict, found: System, path) -> None:
    ignored = _ignored_entries(state, found)
    if ignored:
        rank_zero_print(f"Ignored in {path}: {ignored} (not part of the network taken).")


def _with_weights(general, found: System, ckpt_path, entries) -> MultiDeviceModel:
    """The container of ``general`` and a copy of it per device of ``found``, each loaded strictly with
    ``entries(located, network)``."""
    load_weights(general, entries(found.general, general), ckpt_path, f" ({found.general.prefix or 'no prefix'})")
    system = MultiDeviceModel(general, list(found.devices))
    if found.devices:
        unknown = [d for d in found.devices if d not in DEVICES]
        rank_zero_print(f"{ckpt_path}: device models for {', '.join(found.devices)} under {found.prefix}"
                        + (f" ({', '.join(unknown)}: not a TAU device, its clips are routed to it by name)"
                           if unknown else "") + "; other devices use the general model.")
    for device, located in found.devices.items():
        network = system.device_models[device]
        load_weights(network, entries(located, network), ckpt_path, f" (device {device})")
    return system


def load_general_model(ckpt_path, expected: dict = None, prefix=None, quantize=None) -> tuple:
    """``(model, trained_8bit)``: the general model of a checkpoint (of a container: its general model, said),
    ready for training with ``quantize``: an 8-bit (quantisation-aware) model as it was, a float model
    prepared for quantisation-aware training from its float weights when ``quantize`` is given."""
    system, _, general_prefix = read_system(ckpt_path, expected, prefix)
    if system.device_models:
        rank_zero_print(f"{ckpt_path} is a device container: starting from its general model ({general_prefix}); "
                        f"its device models ({', '.join(system.device_models)}) are not used.")
    general = system.base_model
    trained_8bit = is_qat_state(general.state_dict())
    return with_quantization(general, quantize), trained_8bit


def read_device_system(ckpt_id, project_name, expected: dict = None, prefix=None, allow_unfinished=False) -> tuple:
    """``(system, checkpoint, path)``: the device container of a run id or checkpoint file, its network
    rebuilt from the checkpoint (8-bit if it was trained so). A general model alone becomes a container
    without device models (every device uses it; said). A stage-2 run of this project stopped before its
    last device is refused unless ``allow_unfinished``."""
    path = resolve_checkpoint(str(ckpt_id), project_name)
    system, checkpoint, _ = read_system(path, expected, prefix)
    if not system.device_models:
        rank_zero_print(f"{path} holds one model for all devices (no device models): every device uses it.")
    elif not checkpoint.get("complete", True) and not allow_unfinished:
        run = path.parents[1].name
        raise CheckpointError(f"{path}: run {run} stopped before every device was fine-tuned; "
                              f"finish it first with --resume {run}.")
    return system, checkpoint, path


def merge_device_runs(run_ids, project_name, expected: dict = None) -> tuple:
    """One device container from stage-2 runs that fine-tuned different devices of the same
    general model (independent jobs run in parallel): ``(system, general_checkpoint, devices)``."""
    merged, general, device_models = None, None, {}
    for run_id in run_ids:
        path = resolve_checkpoint(run_id, project_name)
        system, checkpoint, _ = read_system(path, expected)
        if not system.device_models or not checkpoint.get("complete", False):
            raise CheckpointError(f"--merge {run_id}: {path} is not a finished stage-2 run.")
        base = system.base_model.state_dict()
        if merged is None:
            merged, general = system, checkpoint.get("general_checkpoint")
        elif (network_record(system) != network_record(merged) or base.keys() != merged.base_model.state_dict().keys()
              or any(not torch.equal(v, merged.base_model.state_dict()[k]) for k, v in base.items())):
            raise CheckpointError(f"--merge: run {run_id} was fine-tuned from another general model than "
                                  f"{run_ids[0]}; merge only runs started from the same stage-1 run.")
        for device in checkpoint["completed_devices"]:
            if device in device_models:
                raise CheckpointError(f"--merge: device {device} was fine-tuned in more than one of the runs; "
                                      "give each device's run once.")
            device_models[device] = system.device_models[device]
    system = MultiDeviceModel(merged.base_model, [])
    system.device_models.update(device_models)
    return system, general, list(device_models)
