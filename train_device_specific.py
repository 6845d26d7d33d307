"""Stage 2: fine-tune one copy of the general model per training device, then test the system.

    python train_device_specific.py --ckpt_id <stage-1 run id> --dataset_dir DIR
    python train_device_specific.py --ckpt_id <stage-2 run id> --evaluate --eval_dir EVAL_DIR
    python train_device_specific.py --demo --ckpt_id <id of a train_base.py --demo run>
    python train_device_specific.py --resume     # continue the newest stopped run of this script

Each device's copy is trained only on that device's part of the 25 % split; at test time every
clip goes through its device's model and devices without one use the general model.
"""
import json
from pathlib import Path

import lightning as L
import torch

from dataset.dcase25 import TRAIN_DEVICES, of_devices, test_rows, training_rows
from helpers.checkpoints import (CheckpointError, load_device_system, load_general_model, merge_device_runs,
                                 resolve_checkpoint, run_of_checkpoint, save_checkpoint)
from helpers.cli import build_parser, command_line, model_flags, parse_args, set_network_flags
from helpers.complexity import (complexity_markdown, device_models_complexity, model_complexity, over_limits,
                                over_limits_warning)
from helpers.distillation import read_teacher_logits
from helpers.experiment import (check_audio, check_augmentation, checkpoint_dir, close_logger, finished_results,
                                input_sample_rate, make_loader, make_logger, make_trainer, is_rank_zero, open_cache,
                                prepare_dataset_dir, run_cli, say, set_log_interval, start_run)
from helpers.files import write_json
from helpers.predictions import evaluation_rows, predict_logits, predictions_table, write_predictions_csv
from helpers.reporting import write_results
from models.asc_module import SceneClassifier, store_as_submitted
from models.frontend import LogMelFrontEnd
from models.multi_device import MultiDeviceModel
from models.registry import network_record


def build_parser_stage2():
    parser = build_parser("device", __doc__)
    stage2 = parser.add_argument_group("stage 2")
    stage2.add_argument("--ckpt_id", type=str,
                        help="stage-1 run id (or .ckpt path) to fine-tune; with --evaluate a stage-2 run id")
    stage2.add_argument("--train_devices", nargs="+", default=TRAIN_DEVICES, help="devices that get their own model")
    stage2.add_argument("--evaluate", action="store_true", help="predict the evaluation set with a stage-2 model")
    stage2.add_argument("--eval_dir", type=str, default=None, help="evaluation set (audio/, evaluation_setup/)")
    stage2.add_argument("--overwrite", action="store_true", help="replace an existing predictions folder")
    stage2.add_argument("--merge", nargs="+", metavar="RUN_ID", default=None,
                        help="combine finished stage-2 runs of different devices (independent jobs) into one "
                             "system, then run its final test")
    return parser


def main(argv=None):
    args = parse_args(build_parser_stage2(), argv)
    if args.seed is not None:
        L.seed_everything(args.seed, workers=True)
    if args.evaluate:
        return evaluate(args)

    # the data is checked before anything is written: a broken set never starts a run
    dataset_dir = prepare_dataset_dir(args)
    train, test = training_rows(dataset_dir, args.split_dir, args.subset), test_rows(dataset_dir, args.split_dir)
    check_audio(args, dataset_dir, train, test)
    check_augmentation(args)
    teacher = read_teacher_logits(args, train[train["source_label"].isin(args.train_devices)])

    run_id, resume_from = start_run(args, "device")
    run_dir = checkpoint_dir(args.project_name, run_id).parent
    results = finished_results(args.project_name, run_id)
    if resume_from is not None and results is not None:
        say(f"Run {run_id} has finished already (results: {run_dir / 'results.md'}); nothing was changed. "
            "Start a new run without --resume, or use this one:\n" + next_commands(args, run_id))
        return run_id, results

    system, general_ckpt, completed = load_system(args, resume_from)
    set_network_flags(args, network_record(system))  # the run's flags describe the network it trains
    # every device model starts as a copy of the general model: the same complexity
    warning = over_limits_warning(model_complexity(system.base_model, LogMelFrontEnd.from_args(args).input_shape()))
    if warning:
        say(warning)
    config, rate = vars(args), input_sample_rate(args)
    if resume_from is None and is_rank_zero():
        save_system(run_dir, system, config, general_ckpt, completed)
    logger, _ = make_logger(args, run_id)
    train_cache, test_cache = open_cache(args, dataset_dir, train), open_cache(args, dataset_dir, test)
    for device in system.device_models:
        if device in completed:
            say(f"Device {device} was fine-tuned before this run was stopped: skipped.")
            continue
        # each phase trains only this device's copy; its curves are logged as "<device>/..."
        say(f"\n=== Fine-tuning the model of device {device} ===")
        module = SceneClassifier(config, model=system.device_models[device], log_prefix=f"{device}/",
                                 input_sample_rate=rate, teacher=teacher)
        phase_ckpt = run_dir / "checkpoints" / f"last-{device}.ckpt"
        trainer = make_trainer(args, logger, run_id, checkpoint_name=phase_ckpt.stem)
        train_loader = make_loader(dataset_dir, of_devices(train, device), args, True, trainer, train_cache)
        set_log_interval(trainer, train_loader)
        trainer.fit(module, train_loader,
                    make_loader(dataset_dir, of_devices(test, device), args, False, trainer, test_cache),
                    ckpt_path=phase_ckpt if phase_ckpt.is_file() else None)
        completed.append(device)
        if trainer.is_global_zero:  # the device is done: the container keeps it, its phase file can go
            save_system(run_dir, system, config, general_ckpt, completed)
            phase_ckpt.unlink(missing_ok=True)

    system_module = SceneClassifier(config, model=system, input_sample_rate=rate)
    complexity = device_models_complexity(system, system_module.frontend.input_shape())
    logger.log_hyperparams({"complexity": complexity})
    say("\n" + complexity_markdown(complexity))

    # final test on the whole test split, 16-bit parameters, general model and device-specific system
    tester = make_trainer(args, logger, run_id, checkpoint_name=None)
    test_loader = make_loader(dataset_dir, test, args, False, tester, test_cache)
    general_module = SceneClassifier(config, model=system.base_model, log_prefix="general/", input_sample_rate=rate)
    tester.test(general_module, test_loader, verbose=False)
    tester.test(system_module, test_loader, verbose=False)
    results = {"General Model": general_module.test_results, "Device-specific Models": system_module.test_results}

    if tester.is_global_zero:
        confusion = {"General Model": general_module.test_confusion,
                     "Device-specific Models": system_module.test_confusion}
        print("\n" + write_results(run_dir, run_id, results, complexity, confusion=confusion, flags=vars(args),
                                   logger=logger, general_checkpoint=general_ckpt))
        print(f"Run id: {run_id}  (checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}; "
              f"results: {run_dir / 'results.md'})")
        print(next_commands(args, run_id))
    close_logger(logger)
    return run_id, results


def next_commands(args, run_id) -> str:
    """The commands that predict the evaluation set with this run and export it as a submission."""
    defaults = build_parser_stage2()
    eval_dir = str(Path(args.demo_dir) / "eval") if args.demo else "EVAL_DIR"
    leading = ["--ckpt_id", run_id, "--evaluate", "--eval_dir", eval_dir] + (["--demo"] if args.demo else [])
    flags = ["project_name"] + (["demo_dir"] if args.demo else []) + model_flags(defaults)
    evaluate = command_line("train_device_specific.py", leading, args, flags, defaults)
    export = command_line("export_submission.py", ["--ckpt_id", run_id, "--submission_name", "Lastname_INST_task1",
                                                   "--submission_index", "1"], args, ["project_name"], defaults)
    where = "" if args.demo else " (EVAL_DIR: the evaluation set, with audio/ and evaluation_setup/)"
    return (f"Predict the evaluation set with{where}:\n  {evaluate}\n"
            f"Export the run as a submission package (your label, index 1 to 4) with:\n  {export}")


def load_system(args, resume_from):
    """The device container to train and the devices already done: from the stopped run's checkpoint
    when continuing one, merged from finished runs with ``--merge``, else a copy per device of the
    general model of ``--ckpt_id``. The network is the one the checkpoint records."""
    if args.merge:
        if resume_from is not None:
            raise CheckpointError("--merge makes a new run: leave out --resume, or give a new --run_id.")
        return merge_device_runs(args.merge, args.project_name, args)
    if resume_from is not None:
        system, checkpoint, _ = load_device_system(resume_from, args.project_name, args, allow_unfinished=True)
        return system, checkpoint.get("general_checkpoint"), list(checkpoint.get("completed_devices", []))
    if not args.ckpt_id:
        raise CheckpointError("--ckpt_id is required: the stage-1 run id (or .ckpt path) to fine-tune.")
    ckpt_path = resolve_checkpoint(args.ckpt_id, args.project_name)
    # the network (8-bit or not) is the checkpoint's; --quantize turns a float one into an 8-bit one
    general, trained_8bit = load_general_model(ckpt_path, args, args.quantize)
    say(f"Loaded the general model ({general.network_name}{', 8-bit' if trained_8bit else ''}) from {ckpt_path}.")
    if args.quantize and not trained_8bit:
        say("Note: this general model was trained in float; it is quantised to int8 as it is (devices without "
            "a model of their own use it). For a quantisation-aware general model, train stage 1 with "
            f"--quantize {args.quantize} (it can start from this run: --init_ckpt).")
    return MultiDeviceModel(general, args.train_devices), str(ckpt_path), []


def save_system(run_dir, system, config, general_ckpt, completed):
    """The container as the run's ``last.ckpt``; ``complete`` once every device is fine-tuned."""
    save_checkpoint({"state_dict": {f"model.{k}": v for k, v in system.state_dict().items()},
                     "hyper_parameters": config, "network": network_record(system),
                     "general_checkpoint": general_ckpt, "completed_devices": list(completed),
                     "complete": set(completed) >= set(system.device_models)},
                    run_dir / "checkpoints" / "last.ckpt")


def evaluate(args):
    """Predict the evaluation set with a stage-2 system and write ``predictions/<run id>/`` (for a checkpoint
    file outside a run folder: ``predictions/<file name without .ckpt>/``)."""
    if not args.eval_dir:
        raise SystemExit("--evaluate needs --eval_dir DIR, the evaluation set (audio/ and evaluation_setup/).")
    system, checkpoint, ckpt_path = load_device_system(args.ckpt_id, args.project_name, args)
    set_network_flags(args, network_record(system))
    run_id = run_of_checkpoint(ckpt_path)
    out_dir = Path("predictions") / (run_id or ckpt_path.stem)
    if out_dir.exists() and not args.overwrite:
        raise SystemExit(f"{out_dir}/ exists already; pass --overwrite to replace its files.")

    module = SceneClassifier(vars(args), model=system).eval()
    complexity = device_models_complexity(system, module.frontend.input_shape())
    print(complexity_markdown(complexity))
    too_big = over_limits(complexity)
    if too_big:
        raise SystemExit(f"Refusing to write predictions: {', '.join(too_big)} exceed the complexity limits.")

    # each device's files are predicted together in full batches, then put back in the csv's order
    rows = evaluation_rows(args.eval_dir)
    check_audio(args, args.eval_dir, rows)
    by_device = rows.sort_values("device_id", kind="stable")
    # int8 for an 8-bit system, else 16-bit: the stored parameters, in the arithmetic of the final test
    store_as_submitted(system)
    sorted_logits = predict_logits(module, make_loader(args.eval_dir, by_device, args, False, device_column="device_id"))
    logits = torch.empty_like(sorted_logits)
    logits[torch.tensor(by_device.index.tolist())] = sorted_logits

    results_file = ckpt_path.parents[1] / "results.json" if run_id else None
    test_results = json.loads(results_file.read_text())["results"] if results_file and results_file.is_file() else None
    out_csv = write_predictions_csv(out_dir / "output.csv", predictions_table(rows["filename"], logits))
    network = network_record(system)
    write_json(out_dir / "info.json", {"run_id": run_id, "checkpoint": str(ckpt_path), "network": network,
                                       "complexity": complexity, "test_results": test_results})
    save_checkpoint({"state_dict": system.half().state_dict(), "network": network}, out_dir / "model_state_dict.pt")
    print(f"Predictions for {len(rows)} files: {out_csv.resolve()}")
    return out_csv


if __name__ == "__main__":
    run_cli(main)
