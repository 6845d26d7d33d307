"""Stage 2's device container as a run keeps it: where it starts (a copy per device of a stage-1 model,
the stopped run's own checkpoint, or finished device runs merged) and its checkpoint, rewritten after
every device (``model.base_model.*``, ``model.device_models.<device>.*``, the devices done). The loader
is given what the run's flags say about the checkpoint: ``--ckpt_prefix`` and the network flags written."""
from helpers.setup.checkpoints import CheckpointError, resolve_checkpoint, save_checkpoint
from helpers.setup.console import rank_zero_print
from helpers.setup.model_loader import load_general_model, merge_device_runs, read_device_system
from helpers.setup.network_flags import written_network_flags
from models.multi_device import MultiDeviceModel
from models.registry import network_record


def stage2_system(args, resume_from) -> tuple:
    """``(system, general_checkpoint, completed_devices)``: the device container to train and the devices
    already done: from the stopped run's checkpoint when continuing one, merged from finished runs with
    ``--merge``, else a copy per device of the general model of ``--ckpt_id``. The network is the one the
    checkpoint records."""
    if args.merge:
        if resume_from is not None:
            raise CheckpointError("--merge makes a new run: leave out --resume, or give a new --run_id.")
        return merge_device_runs(args.merge, args.project_name, written_network_flags(args))
    if resume_from is not None:
        system, checkpoint, _ = load_device_system(resume_from, args.project_name, args, allow_unfinished=True)
        return system, checkpoint.get("general_checkpoint"), list(checkpoint.get("completed_devices", []))
    if not args.ckpt_id:
        raise CheckpointError("--ckpt_id is required: the stage-1 run id (or .ckpt path) to fine-tune.")
    ckpt_path = resolve_checkpoint(args.ckpt_id, args.project_name)
    # the network (8-bit or not) is the checkpoint's; --quantize turns a float one into an 8-bit one
    general, trained_8bit = load_general_model(ckpt_path, written_network_flags(args), args.ckpt_prefix,
                                               args.quantize)
    rank_zero_print(f"Loaded the general model ({general.network_name}{', 8-bit' if trained_8bit else ''}) "
                    f"from {ckpt_path}.")
    if args.quantize and not trained_8bit:
        rank_zero_print("Note: this general model was trained in float; it is quantised to int8 as it is (devices "
                        "without a model of their own use it). For a quantisation-aware general model, train "
                        f"stage 1 with --quantize {args.quantize} (it can start from this run: --init_ckpt).")
    return MultiDeviceModel(general, args.train_devices), str(ckpt_path), []


def load_device_system(ckpt_id, project_name, args=None, allow_unfinished=False) -> tuple:
    """``read_device_system`` of the loader with what the run's flags ``args`` say: the network flags
    written on the command line (the checkpoint's network must agree) and ``--ckpt_prefix``."""
    expected = written_network_flags(args) if args is not None else None
    return read_device_system(ckpt_id, project_name, expected, getattr(args, "ckpt_prefix", None), allow_unfinished)


def save_system(run_dir, system, config: dict, general_checkpoint, completed) -> None:
    """The container as the run's ``checkpoints/last.ckpt``; ``complete`` once every device is fine-tuned."""
    save_checkpoint({"state_dict": {f"model.{k}": v for k, v in system.state_dict().items()},
                     "hyper_parameters": config, "network": network_record(system),
                     "general_checkpoint": general_checkpoint, "completed_devices": list(completed),
                     "complete": set(completed) >= set(system.device_models)},
                    run_dir / "checkpoints" / "last.ckpt")
