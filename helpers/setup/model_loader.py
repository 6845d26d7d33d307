"""Networks from checkpoints, found by the networks' own parameter names under whatever prefix they sit.

One loader for stage 2, ``--evaluate``, ``--init_ckpt``, teacher logits and the export. A checkpoint holds
a general model (``model.`` in this project's stage-1 runs and the organisers') or a device container: a
general model beside a group of device models (``model.base_model.`` and ``model.device_models.<device>.``
here; ``<name>.original_model.`` and ``<name>.device_models.<device>.`` in code bases built on the
baseline). Entries of anything else (a teacher kept beside its student, a front end, optimiser states) are
ignored and said; where several networks fit, the loader says which it took and that ``--ckpt_prefix``
takes another. Where a checkpoint records no network settings they are read from the weights' shapes.
"""
from dataclasses import dataclass, field

import torch

from dataset.dcase25 import DEVICES
from helpers.setup.checkpoints import CheckpointError, hyper_parameters, load_checkpoint, resolve_checkpoint
from helpers.setup.console import rank_zero_print
from helpers.setup.flags import network_flags, set_network_flags, written_network_flags
from models.multi_device import MultiDeviceModel
from models.quantization import is_qat_state, with_quantization
from models.registry import (
    DEFAULT_NETWORK,
    build_network,
    network_record,
    networks,
    settings_from_state,
    state_dict_anchor,
)

# a container's general model, by the names code bases give it (the first that is there is taken)
GENERAL_MODEL_NAMES = ("base_model", "original_model", "general_model", "general", "base", "model")


@dataclass
class Located:
    """One network found in a checkpoint: its prefix, the registered network it is, its entries (prefix
    removed)."""
    prefix: str
    name: str
    state: dict


@dataclass
class System:
    """What a checkpoint holds: a general model and the device models of its container (none for a
    general model alone); ``prefix`` is the container's (or the general model's)."""
    prefix: str
    general: Located
    devices: dict = field(default_factory=dict)

    def describe(self) -> str:
        kind = f"a device container ({', '.join(self.devices)})" if self.devices else "a general model"
        return f"{self.prefix or '(no prefix)'}: {kind} of {self.general.name}"


def _parent(prefix: str) -> tuple:
    """``("model.device_models.", "a")`` for ``"model.device_models.a."``; ``("", name)`` at the top."""
    parent, _, last = prefix[:-1].rpartition(".")
    return (parent + "." if parent else ""), last


def _candidates(state: dict) -> list:
    """Every (prefix, network) whose first entry sits in ``state``, each with the entries under its prefix
    (less those of a longer candidate prefix, e.g. a teacher kept inside the student's)."""
    found = []
    for name in networks():
        anchor = state_dict_anchor(name)
        found += [(key[:-len(anchor)], name) for key in state if key == anchor or key.endswith("." + anchor)]
    prefixes = [prefix for prefix, _ in found]
    located = []
    for prefix, name in found:
        inner = [p for p in prefixes if p != prefix and p.startswith(prefix)]
        own = {k[len(prefix):]: v for k, v in state.items()
               if k.startswith(prefix) and not any(k.startswith(p) for p in inner)}
        located.append(Located(prefix, name, own))
    return located


def _is_device_group(group: str, members) -> bool:
    """Device models sit under a group named for devices (``device_models.``) or named by device ids (a
    group holding a general model, such as ``multi_device_model.base_model.``, is a container instead)."""
    if set(members) & set(GENERAL_MODEL_NAMES):
        return False
    return "device" in _parent(group)[1].lower() or set(members) <= set(DEVICES)


def find_systems(state: dict, path) -> list:
    """The systems a state dict holds, the preferred first: containers, then ``model.``, then by prefix."""
    candidates = _candidates(state)
    groups = {}
    for located in candidates:
        if located.prefix:
            group, member = _parent(located.prefix)
            if group:
                groups.setdefault(group, {})[member] = located
    systems, used = [], set()
    for group, members in groups.items():
        if not _is_device_group(group, members):
            continue
        container, network = _parent(group)[0], next(iter(members.values())).name
        generals = {_parent(c.prefix)[1]: c for c in candidates
                    if c.prefix and _parent(c.prefix)[0] == container and c.name == network}
        general = next((generals[n] for n in GENERAL_MODEL_NAMES if n in generals), None)
        if general is None:
            raise CheckpointError(f"{path} holds device models under {group} ({', '.join(members)}) but no general "
                                  f"model beside them (expected {container}{GENERAL_MODEL_NAMES[0]}. or "
                                  f"{container}{GENERAL_MODEL_NAMES[1]}.): devices without a model of their own "
                                  "need one. Use a checkpoint of the whole container.")
        systems.append(System(container, general, members))
        used.update({general.prefix, *(m.prefix for m in members.values())})
    systems += [System(c.prefix, c) for c in candidates if c.prefix not in used]
    return sorted(systems, key=lambda s: (not s.devices, s.prefix != "model.", len(s.prefix), s.prefix))


def choose_system(checkpoint: dict, path, prefix=None) -> System:
    """The system of the checkpoint to use: the one under ``prefix`` (``--ckpt_prefix``) if given, else the
    preferred one (see ``find_systems``), said in one line where there are several."""
    state = checkpoint["state_dict"]
    systems = find_systems(state, path)
    if not systems:
        raise CheckpointError(_no_network_message(state, path))
    if prefix is not None:
        wanted = prefix if prefix.endswith(".") or not prefix else prefix + "."
        chosen = [s for s in systems if wanted in (s.prefix, s.general.prefix)]
        if not chosen:
            raise CheckpointError(f"--ckpt_prefix {prefix}: {path} holds no network there. It holds: "
                                  + "; ".join(s.describe() for s in systems) + ".")
        system = chosen[0]
    else:
        system = systems[0]
        if len(systems) > 1:
            others = [s for s in systems[1:] if s.prefix]
            rank_zero_print(f"{path} holds {len(systems)} networks; taking {system.describe()}. Others: "
                            + "; ".join(s.describe() for s in others)
                            + f" (take one with --ckpt_prefix {others[0].prefix if others else 'PREFIX'}).")
    ignored = _ignored_entries(state, system)
    if ignored:
        rank_zero_print(f"Ignored in {path}: {ignored} (not part of the network taken).")
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


def _shapes(state: dict, limit: int = 3) -> str:
    return ", ".join(f"{k} {list(v.shape)}" for k, v in list(state.items())[:limit])


def _no_network_message(state: dict, path) -> str:
    expected = "; ".join(f"{name} starts with {_shapes(build_network(name).state_dict(), 2)}"
                         for name, cls in networks().items() if not hasattr(cls, "frontend"))
    first = _shapes(state) or "nothing (no tensors)"
    return (f"{path} holds no network of this project: its first entries are {first}. Expected, under any prefix: "
            f"{expected}. Networks of another architecture cannot be loaded here; nothing was written.")


def _mismatch(network: torch.nn.Module, state: dict) -> str:
    """The first entries where ``state`` and ``network`` differ, with names and shapes."""
    own = network.state_dict()
    missing = [f"{k} {list(v.shape)}" for k, v in own.items() if k not in state]
    extra = [f"{k} {list(v.shape)}" for k, v in state.items() if k not in own]
    shapes = [f"{k}: {list(state[k].shape)} in the checkpoint, {list(v.shape)} here" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    parts = ([f"shapes differ: {'; '.join(shapes[:3])}"] if shapes else []) \
        + ([f"the checkpoint lacks {', '.join(missing[:3])}"] if missing else []) \
        + ([f"the network has no {', '.join(extra[:3])}"] if extra else [])
    return "; ".join(parts)


def _network_entries(network: torch.nn.Module, state: dict) -> dict:
    """The entries of ``state`` that belong to the network: those under its own modules (``in_c.*``,
    ``stages.*`` ...), so that a stray entry beside them (a front end saved with the model) is ignored."""
    heads = {k.split(".")[0] for k in network.state_dict()}
    return {k: v for k, v in state.items() if k.split(".")[0] in heads}


def _recorded_settings(checkpoint: dict, name: str):
    """The settings the checkpoint records for network ``name`` (this project's record, or the organisers'
    hyper-parameters), or None."""
    record, saved = checkpoint.get("network"), hyper_parameters(checkpoint)
    if record:
        return record["config"] if record["name"] == name else None
    if (saved.get("model") or DEFAULT_NETWORK) == name and any(flag in saved for flag in network_flags()):
        return saved
    return None


def _fits(name: str, settings: dict, state: dict) -> bool:
    network = build_network(name, settings)
    if is_qat_state(state):
        with_quantization(network, "int8")
    own, entries = network.state_dict(), _network_entries(network, state)
    return own.keys() == entries.keys() and all(own[k].shape == entries[k].shape for k in own)


def _settings(located: Located, checkpoint: dict, path, given: dict) -> dict:
    """The settings to build ``located`` with: the checkpoint's record where it fits the weights, else those
    the weights' shapes fix (said in one line), else the run's network flags."""
    recorded = _recorded_settings(checkpoint, located.name)
    try:
        from_shapes = settings_from_state(located.name, located.state)
    except ValueError as err:
        raise CheckpointError(f"{path}: the entries under {located.prefix or '(no prefix)'} start like "
                              f"{located.name}'s but are not its ({err}).") from err
    where = located.prefix or "the top level"
    if recorded is not None and (from_shapes is None or _fits(located.name, recorded, located.state)):
        return recorded
    if from_shapes is None:
        return given
    read = ", ".join(f"{k} {_shown(v)}" for k, v in from_shapes.items())
    why = "its recorded settings do not fit the weights there" if recorded is not None else "no settings recorded"
    rank_zero_print(f"{path}: {located.name} under {where}, {why}; read from the weights' shapes: {read}.")
    return from_shapes


def build_located(located: Located, checkpoint: dict, path, args=None) -> torch.nn.Module:
    """A fresh network of ``located``'s kind with its settings (see ``_settings``), ready for its weights.
    Network flags given in ``args`` must agree. 8-bit (quantisation-aware) where the entries or the record
    say so."""
    given = written_network_flags(args) if args is not None else {}
    given_model = given.pop("model", None)
    try:
        network = build_network(located.name, _settings(located, checkpoint, path, given))
    except (LookupError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its network cannot be built ({err}).") from err
    config = network_record(network)["config"]
    differ = [f"--model {given_model} given here, the checkpoint holds {located.name}"] \
        if given_model not in (None, located.name) else []
    differ += [f"--{flag} {_shown(value)} given here, the checkpoint's network has {_shown(config.get(flag))}"
               for flag, value in given.items() if flag not in config or _listed(config[flag]) != _listed(value)]
    if differ:
        raise CheckpointError(f"{path}: {'; '.join(differ)}. The network is taken from the checkpoint: "
                              "leave these flags out.")
    saved = hyper_parameters(checkpoint)
    quantize = (checkpoint.get("network") or {}).get("quantize") or saved.get("quantize")
    if quantize or is_qat_state(located.state):
        with_quantization(network, quantize or "int8")
    return network


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def _listed(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def load_weights(model: torch.nn.Module, state: dict, path, what: str = "") -> None:
    """``load_state_dict(strict=True)`` of the network's own entries; a mismatch names the first entries
    that differ, with their shapes."""
    entries = _network_entries(model, state)
    try:
        model.load_state_dict(entries, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}{what}: the weights do not fit the network {network_record(model)['name']} "
                              f"({_mismatch(model, entries)}).") from err


def read_system(ckpt_path, args=None, prefix=None) -> tuple:
    """``(system, checkpoint, general_prefix)``: the device container the checkpoint holds, weights loaded
    (no device models for a general model alone). ``prefix``: ``--ckpt_prefix``."""
    checkpoint = load_checkpoint(ckpt_path)
    found = choose_system(checkpoint, ckpt_path, prefix)
    general = build_located(found.general, checkpoint, ckpt_path, args)
    load_weights(general, found.general.state, ckpt_path, f" ({found.general.prefix or 'no prefix'})")
    others = [d for d in found.devices.values() if d.name != found.general.name]
    if others:
        raise CheckpointError(f"{ckpt_path}: the device model under {others[0].prefix} is a {others[0].name}, "
                              f"the general model a {found.general.name}; a container holds one network.")
    system = MultiDeviceModel(general, list(found.devices))
    if found.devices:
        unknown = [d for d in found.devices if d not in DEVICES]
        rank_zero_print(f"{ckpt_path}: device models for {', '.join(found.devices)} under {found.prefix}"
                        + (f" ({', '.join(unknown)}: not a TAU device, its clips are routed to it by name)"
                           if unknown else "") + "; other devices use the general model.")
    for device, located in found.devices.items():
        load_weights(system.device_models[device], located.state, ckpt_path, f" (device {device})")
    return system, checkpoint, found.general.prefix


def load_general_model(ckpt_path, args=None, quantize=None):
    """``(model, trained_8bit)``: the general model of a checkpoint (of a container: its general model, said),
    ready for training with ``quantize``: an 8-bit (quantisation-aware) model as it was, a float model
    prepared for quantisation-aware training from its float weights when ``quantize`` is given."""
    system, _, prefix = read_system(ckpt_path, args, getattr(args, "ckpt_prefix", None))
    if system.device_models:
        rank_zero_print(f"{ckpt_path} is a device container: starting from its general model ({prefix}); its "
                        f"device models ({', '.join(system.device_models)}) are not used.")
    general = system.base_model
    trained_8bit = is_qat_state(general.state_dict())
    return with_quantization(general, quantize), trained_8bit


def start_model(args):
    """The network stage 1 trains: the general model of ``--init_ckpt``, or a fresh network of the flags with
    its starting weights (a network that has pretrained ones: ``--pretrained``). None for a resumed run,
    which continues from its own checkpoint."""
    if args.resume:
        return None
    if args.init_ckpt:
        init_path = resolve_checkpoint(args.init_ckpt, args.project_name)
        model, _ = load_general_model(init_path, args, args.quantize)
        set_network_flags(args, network_record(model))  # the run's flags describe the network it trains
        rank_zero_print(f"Starting from the general model of {init_path}.")
        return model
    model = build_network(args.model, vars(args))
    if hasattr(model, "load_pretrained_weights"):
        rank_zero_print(model.load_pretrained_weights())
    return with_quantization(model, args.quantize)


def load_device_system(ckpt_id, project_name, args=None, allow_unfinished=False, prefix=None) -> tuple:
    """``(system, checkpoint, path)``: the device container of a run id or checkpoint file, its network
    rebuilt from the checkpoint (8-bit if it was trained so). A general model alone becomes a container
    without device models (every device uses it; said). A stage-2 run of this project stopped before its
    last device is refused unless ``allow_unfinished``. ``prefix`` (else ``args.ckpt_prefix``): which of
    several networks to take."""
    path = resolve_checkpoint(str(ckpt_id), project_name)
    prefix = prefix if prefix is not None else getattr(args, "ckpt_prefix", None)
    system, checkpoint, _ = read_system(path, args, prefix)
    if not system.device_models:
        rank_zero_print(f"{path} holds one model for all devices (no device models): every device uses it.")
    elif not checkpoint.get("complete", True) and not allow_unfinished:
        run = path.parents[1].name
        raise CheckpointError(f"{path}: run {run} stopped before every device was fine-tuned; "
                              f"finish it first with --resume {run}.")
    return system, checkpoint, path


def merge_device_runs(run_ids, project_name, args=None):
    """One device container from stage-2 runs that fine-tuned different devices of the same
    general model (independent jobs run in parallel): ``(system, general_checkpoint, devices)``."""
    merged, general, device_models = None, None, {}
    for run_id in run_ids:
        path = resolve_checkpoint(run_id, project_name)
        system, checkpoint, _ = read_system(path, args)
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
