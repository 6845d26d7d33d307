"""Stage 1: train the general model (CP-Mobile, or another network with --model) on the 25 % split
(all training devices together).

    python train_base.py --dataset_dir /data/TAU-urban-acoustic-scenes-2022-mobile-development
    python train_base.py --demo          # the built-in synthetic demo set with a shortened recipe
    python train_base.py --demo --model cp_resnet --rho 4   # a teacher of another family
    python train_base.py --resume        # continue the newest stopped run of this script
"""
import lightning as L

from dataset.dcase25 import test_rows, training_rows
from helpers.checkpoints import load_general_model, resolve_checkpoint
from helpers.cli import build_parser, command_line, model_flags, parse_args
from helpers.complexity import complexity_sentence, model_complexity, over_limits_warning
from helpers.distillation import read_teacher_logits
from helpers.experiment import (check_audio, check_augmentation, checkpoint_dir, close_logger, finished_results,
                                input_sample_rate, make_loader, make_logger, make_trainer, open_cache,
                                prepare_dataset_dir, run_cli, say, set_log_interval, start_run)
from helpers.reporting import write_results
from models.asc_module import SceneClassifier


def build_parser_stage1():
    parser = build_parser("base", __doc__)
    parser.add_argument_group("stage 1").add_argument(
        "--init_ckpt", type=str, default=None, metavar="RUN_ID",
        help="start from the general model of this stage-1 run (or .ckpt), e.g. a float run to fine-tune with "
             "--quantize int8; training itself starts at epoch 0")
    return parser


def main(argv=None):
    args = parse_args(build_parser_stage1(), argv)
    if args.seed is not None:
        L.seed_everything(args.seed, workers=True)

    model = None
    if args.init_ckpt and not args.resume:  # a resumed run continues from its own checkpoint
        init_path = resolve_checkpoint(args.init_ckpt, args.project_name)
        model, _ = load_general_model(init_path, args, args.quantize)
        say(f"Starting from the general model of {init_path}.")
    module = SceneClassifier(vars(args), model=model, input_sample_rate=input_sample_rate(args))
    complexity = model_complexity(module.model, module.frontend.input_shape())
    say(f"Model {args.model}: {complexity_sentence(complexity)}.")
    if over_limits_warning(complexity):
        say(over_limits_warning(complexity))

    # the data is checked before anything is written: a broken set never starts a run
    dataset_dir = prepare_dataset_dir(args)
    train = training_rows(dataset_dir, args.split_dir, args.subset)
    test = test_rows(dataset_dir, args.split_dir)
    check_audio(args, dataset_dir, train, test)
    check_augmentation(args)
    module.teacher = read_teacher_logits(args, train)

    run_id, resume_from = start_run(args, "base")
    results = finished_results(args.project_name, run_id)
    if resume_from is not None and results is not None:
        say(f"Run {run_id} has finished already (results: {checkpoint_dir(args.project_name, run_id).parent}/"
            f"results.md); nothing was changed. Start a new run without --resume, or fine-tune this one with:\n  "
            + stage2_command(args, run_id))
        return run_id, results["General Model"]

    logger, _ = make_logger(args, run_id)
    logger.log_hyperparams({"macs": complexity["macs"], "param_bytes": complexity["param_bytes"]})
    trainer = make_trainer(args, logger, run_id)
    train_loader = make_loader(dataset_dir, train, args, train=True, trainer=trainer,
                               cache=open_cache(args, dataset_dir, train))
    test_loader = make_loader(dataset_dir, test, args, train=False, trainer=trainer,
                              cache=open_cache(args, dataset_dir, test))
    set_log_interval(trainer, train_loader)

    # the test split doubles as the validation set, as in the organisers' recipe
    trainer.fit(module, train_loader, test_loader, ckpt_path=resume_from)
    last_ckpt = checkpoint_dir(args.project_name, run_id) / "last.ckpt"
    trainer.test(module, test_loader, ckpt_path=last_ckpt, verbose=False)

    if trainer.is_global_zero:
        run_dir = last_ckpt.parents[1]
        print("\n" + write_results(run_dir, run_id, {"General Model": module.test_results}, {"general": complexity},
                                   confusion={"General Model": module.test_confusion}, flags=vars(args),
                                   logger=logger))
        print(f"Run id: {run_id}  (checkpoint: {last_ckpt.resolve()})")
        print("Fine-tune one model per device with:\n  " + stage2_command(args, run_id))
    close_logger(logger)
    return run_id, module.test_results


def stage2_command(args, run_id) -> str:
    """The command that starts stage 2 from this run, with the data, project and model flags it must share
    (the network, 8-bit or not, comes from the checkpoint)."""
    defaults = build_parser("device", "")
    shared = ["project_name", "wandb_mode"] + (["demo_dir"] if args.demo else ["dataset_dir", "split_dir"])
    leading = ["--ckpt_id", run_id] + (["--demo"] if args.demo else [])
    return command_line("train_device_specific.py", leading, args, shared + model_flags(defaults), defaults)


if __name__ == "__main__":
    run_cli(main)
