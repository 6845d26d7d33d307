"""Stage 1: train the general model (CP-Mobile, or another network with --model) on the 25 % split,
all training devices together; validate on the development-test split; test the last checkpoint.

    python train_base.py --dataset_dir /data/TAU-urban-acoustic-scenes-2022-mobile-development
    python train_base.py --demo          # the built-in synthetic demo set with a shortened recipe
    python train_base.py --demo --model cp_resnet --rho 4   # a teacher of another family
    python train_base.py --resume        # continue the newest stopped run of this script
"""
from helpers.setup.console import run_cli
from helpers.setup.flags import parse_args, stage1_parser
from helpers.setup.general_model import start_model
from helpers.stage import Stage
from helpers.training.builder import build_module


def main(argv=None):
    args = parse_args(stage1_parser(__doc__), argv)
    stage = Stage(args, "base")

    # the model and the data are checked before anything is written: a broken set never starts a run
    module = build_module(vars(args), model=start_model(args), input_sample_rate=stage.input_rate)
    complexity = stage.announce_model(module.model)
    inputs = stage.check_inputs()
    module.teacher = inputs.teacher

    run = stage.start()
    if run.finished is not None:
        return run.run_id, run.finished["General Model"]
    logger = stage.open_logger(run, {"macs": complexity["macs"], "param_bytes": complexity["param_bytes"]})
    trainer, train_loader = stage.trainer(run, logger, inputs, inputs.train)
    test_loader = stage.loader(inputs, inputs.test, trainer)

    # the test split doubles as the validation set, as in the organisers' recipe
    trainer.fit(module, train_loader, test_loader, ckpt_path=run.resume_from)
    trainer.test(module, test_loader, ckpt_path=stage.checkpoint_path(run), verbose=False)
    stage.finish(run, logger, {"General Model": module}, {"general": complexity})
    return run.run_id, module.test_results


if __name__ == "__main__":
    run_cli(main)
