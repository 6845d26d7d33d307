"""Checkpoints of other code bases, which record no network: where their networks sit and what settings
build them. The loader (``helpers/setup/model_loader.py``) calls this module only for a checkpoint without
this project's record.

A network is found by its first parameter name under whatever prefix it sits (``model.``,
``teacher_model.``, ``system.original_model.``, none). A checkpoint holds a general model or a device
container: a general model beside a group of device models (``<name>.base_model.`` or
``<name>.original_model.`` beside ``<name>.device_models.<device>.``). Entries of anything else (a teacher
kept beside its student, a front end, optimiser states) are left out and said; where several networks fit,
the loader says which it took and that ``--ckpt_prefix`` takes another. The settings are the checkpoint's
hyper-parameters where they fit the weights, else those the weights' shapes fix.
"""
from dataclasses import dataclass, field

from dataset.dcase25 import DEVICES
from helpers.setup.checkpoints import CheckpointError, hyper_parameters
from helpers.setup.console import rank_zero_print
from models.quantization import is_qat_state, with_quantization
from models.registry import (
    DEFAULT_NETWORK,
    build_network,
    flag_fields,
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


def choose_system(state: dict, path, prefix=None) -> System:
    """The system of the checkpoint to use: the one under ``prefix`` (``--ckpt_prefix``) if given, else the
    preferred one (see ``find_systems``), said in one line where there are several."""
    systems = find_systems(state, path)
    if not systems:
        raise CheckpointError(_no_network_message(state, path))
    if prefix is not None:
        chosen = [s for s in systems if as_prefix(prefix) in (s.prefix, s.general.prefix)]
        if not chosen:
            raise CheckpointError(f"--ckpt_prefix {prefix}: {path} holds no network there. It holds: "
                                  + "; ".join(s.describe() for s in systems) + ".")
        return chosen[0]
    if len(systems) > 1:
        others = [s for s in systems[1:] if s.prefix]
        rank_zero_print(f"{path} holds {len(systems)} networks; taking {systems[0].describe()}. Others: "
                        + "; ".join(s.describe() for s in others)
                        + f" (take one with --ckpt_prefix {others[0].prefix if others else 'PREFIX'}).")
    return systems[0]


def as_prefix(prefix: str) -> str:
    """``--ckpt_prefix`` as a key prefix: ``model`` and ``model.`` alike give ``model.``."""
    return prefix if prefix.endswith(".") or not prefix else prefix + "."


def shapes(entries, limit: int = 3) -> str:
    """``"in_c.0.0.weight [8, 1, 3, 3], ..."``: the first ``limit`` of ``(name, tensor)`` pairs."""
    return ", ".join(f"{k} {list(v.shape)}" for k, v in list(entries)[:limit])


def _no_network_message(state: dict, path) -> str:
    expected = "; ".join(f"{name} starts with {shapes(build_network(name).state_dict().items(), 2)}"
                         for name, cls in networks().items() if not hasattr(cls, "frontend"))
    first = shapes(state.items()) or "nothing (no tensors)"
    return (f"{path} holds no network of this project: its first entries are {first}. Expected, under any prefix: "
            f"{expected}. Networks of another architecture cannot be loaded here; nothing was written.")


def _not_its_entries_message(located: Located, path, err: ValueError) -> str:
    """Why the entries of ``located`` are not its network's: the first entries the network has no place for,
    with their shapes, and the network's own entries (at its default settings) that the checkpoint lacks."""
    reference = build_network(located.name).state_dict()
    foreign = [(located.prefix + k, v) for k, v in located.state.items() if k not in reference]
    lacking = [(k, v) for k, v in reference.items() if k not in located.state]
    where = located.prefix or "(no prefix)"
    message = f"{path}: the entries under {where} start like {located.name}'s but are not its ({err})"
    if foreign:
        message += f": the first that do not fit are {shapes(foreign)}"
    if lacking:
        message += (", where" if foreign else ": where") + f" {located.name} has {shapes(lacking)} (at its defaults)"
    return message + "."


def network_entries(network, state: dict) -> dict:
    """The entries of ``state`` that belong to the network: those under its own modules (``in_c.*``,
    ``stages.*`` ...), so that a stray entry beside them (a front end saved with the model) is left out."""
    heads = {k.split(".")[0] for k in network.state_dict()}
    return {k: v for k, v in state.items() if k.split(".")[0] in heads}


def _hyper_parameter_settings(checkpoint: dict, name: str):
    """The organisers' (and this project's older checkpoints') hyper-parameters where they name network
    ``name`` (or none, meaning CP-Mobile) and hold network settings; else None."""
    saved = hyper_parameters(checkpoint)
    settings = {f.name for cls in networks().values() for f in flag_fields(cls.config_class)}
    if (saved.get("model") or DEFAULT_NETWORK) == name and any(flag in saved for flag in settings):
        return saved
    return None


def _fits(name: str, settings: dict, state: dict) -> bool:
    network = build_network(name, settings)
    if is_qat_state(state):
        with_quantization(network, "int8")
    own, entries = network.state_dict(), network_entries(network, state)
    return own.keys() == entries.keys() and all(own[k].shape == entries[k].shape for k in own)


def foreign_settings(located: Located, checkpoint: dict, path, given: dict) -> dict:
    """The settings to build ``located`` with: the checkpoint's hyper-parameters where they fit the weights,
    else those the weights' shapes fix (said in one line), else ``given`` (the settings the caller expects)."""
    recorded = _hyper_parameter_settings(checkpoint, located.name)
    try:
        from_shapes = settings_from_state(located.name, located.state)
    except ValueError as err:
        raise CheckpointError(_not_its_entries_message(located, path, err)) from err
    if recorded is not None and (from_shapes is None or _fits(located.name, recorded, located.state)):
        return recorded
    if from_shapes is None:
        return given
    read = ", ".join(f"{k} {shown(v)}" for k, v in from_shapes.items())
    why = "its recorded settings do not fit the weights there" if recorded is not None else "no settings recorded"
    rank_zero_print(f"{path}: {located.name} under {located.prefix or 'the top level'}, {why}; read from the "
                    f"weights' shapes: {read}.")
    return from_shapes


def shown(value) -> str:
    """A setting as a flag takes it: ``3 2 1`` for a tuple."""
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
