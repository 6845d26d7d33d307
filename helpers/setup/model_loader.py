"""Networks from checkpoints: the general model of a stage-1 run, the device container of a stage-2
run (this project's and the organisers' Lightning checkpoints), and finished device runs merged."""
import torch

from helpers.setup.checkpoints import CheckpointError, hyper_parameters, load_checkpoint, resolve_checkpoint
from helpers.setup.console import rank_zero_print
from helpers.setup.flags import given_network_flags, network_flags
from models.multi_device import MultiDeviceModel
from models.quantization import is_qat_state, with_quantization
from models.registry import DEFAULT_NETWORK, build_network, network_record

# prefixes of the general model and of the device container in Lightning checkpoints
GENERAL_PREFIXES = ("model.",)
CONTAINER_PREFIXES = ("model.", "multi_device_model.")


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


def start_model(args):
    """The network stage 1 trains: the general model of ``--init_ckpt``, or a fresh network of the flags with
    its starting weights (a network that has pretrained ones: ``--pretrained``). None for a resumed run,
    which continues from its own checkpoint."""
    if args.resume:
        return None
    if args.init_ckpt:
        init_path = resolve_checkpoint(args.init_ckpt, args.project_name)
        model, _ = load_general_model(init_path, args, args.quantize)
        rank_zero_print(f"Starting from the general model of {init_path}.")
        return model
    model = build_network(args.model, vars(args))
    if hasattr(model, "load_pretrained_weights"):
        rank_zero_print(model.load_pretrained_weights())
    return with_quantization(model, args.quantize)


def devices_in(state: dict) -> list:
    """The devices that have their own model in a container's state dict, in stored order."""
    return list(dict.fromkeys(k.split(".")[1] for k in state if k.startswith("device_models.")))


def load_device_system(ckpt_id, project_name, args=None, allow_general=False, allow_unfinished=False) -> tuple:
    """``(system, checkpoint, path)``: the device container of a stage-2 run (or ``.ckpt``), its
    network rebuilt from the checkpoint (see ``checkpoint_network``; 8-bit if it was trained so).

    A stage-1 checkpoint becomes a container without device models when ``allow_general``; a
    stage-2 run stopped before its last device is refused unless ``allow_unfinished``."""
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
