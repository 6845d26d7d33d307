"""The next commands a run prints: they carry the flags the next run must share with it."""
import argparse
import shlex
from pathlib import Path

from helpers.setup.flags import stage2_parser


def group_flags(parser: argparse.ArgumentParser, title: str) -> list:
    """The flags of the argument group ``title`` ("network", "front end", ...) of ``build_parser``."""
    group = next(g for g in parser._action_groups if g.title == title)
    return [action.dest for action in group._group_actions]


def command_line(script: str, leading, args, flags, defaults: argparse.ArgumentParser) -> str:
    """``python <script> <leading ...>`` followed by each of ``flags`` whose value in ``args`` differs from its
    default in ``defaults``: the next command of a run, carrying the settings it must share with it."""
    command = ["python", script, *map(str, leading)]
    for flag in flags:
        value = getattr(args, flag, None)
        if value is not None and value != defaults.get_default(flag):
            command += [f"--{flag}", str(value)]
    return shlex.join(command)


def model_flags(parser: argparse.ArgumentParser) -> list:
    """The flags that define the model's input: a later command on the same run must repeat them (the
    network itself is rebuilt from the checkpoint)."""
    return ["orig_sample_rate"] + group_flags(parser, "front end")


def stage2_command(args, run_id) -> str:
    """The command that starts stage 2 from stage-1 run ``run_id``, with the data, project and model flags it
    must share (the network, 8-bit or not, comes from the checkpoint)."""
    defaults = stage2_parser("")
    shared = ["project_name", "wandb_mode"] + (["demo_dir"] if args.demo else ["dataset_dir", "split_dir"])
    leading = ["--ckpt_id", run_id] + (["--demo"] if args.demo else [])
    return command_line("train_device_specific.py", leading, args, shared + model_flags(defaults), defaults)


def evaluation_commands(args, run_id) -> str:
    """The commands that predict the evaluation set with stage-2 run ``run_id`` and export it as a submission."""
    defaults = stage2_parser("")
    eval_dir = str(Path(args.demo_dir) / "eval") if args.demo else "EVAL_DIR"
    leading = ["--ckpt_id", run_id, "--evaluate", "--eval_dir", eval_dir] + (["--demo"] if args.demo else [])
    flags = ["project_name"] + (["demo_dir"] if args.demo else []) + model_flags(defaults)
    evaluate = command_line("train_device_specific.py", leading, args, flags, defaults)
    export = command_line("export_submission.py", ["--ckpt_id", run_id, "--submission_name", "Lastname_INST_task1",
                                                   "--submission_index", "1"], args, ["project_name"], defaults)
    where = "" if args.demo else " (EVAL_DIR: the evaluation set, with audio/ and evaluation_setup/)"
    return (f"Predict the evaluation set with{where}:\n  {evaluate}\n"
            f"Export the run as a submission package (your label, index 1 to 4) with:\n  {export}")
