"""What a new user meets first: exact flags and a helpful --help, one wandb run per stage when both
stages run in one process (as scripts/demo.py does), an early warning for models over the limits,
and predictions named after the checkpoint they come from."""
import importlib.util
import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from wandb_offline import offline_runs, read_run

import export_submission
import train_base
import train_device_specific
from dataset import demo
from dataset.dcase25 import TRAIN_DEVICES
from helpers.base.errors import DataError
from helpers.outputs.complexity import model_complexity, over_limits_warning
from helpers.setup.defaults import DEMO_DEFAULTS, STAGE_DEFAULTS
from helpers.setup.flags import build_parser, parse_args, stage1_parser, stage2_parser
from helpers.setup.runs import RUN_ID_ENV
from helpers.training.builder import build_module
from models.cp_mobile import Network, NetworkConfig
from models.multi_device import MultiDeviceModel

REPO = Path(__file__).resolve().parents[1]


def load_file(path: Path, name: str):
    """A module from a file outside the importable packages (benchmarks/, submission_template/)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(workdir_factory):
    return workdir_factory("usability")


def data_flags(root):
    return ["--dataset_dir", str(root / "demo_data"), "--split_dir", str(root / "demo_data" / "split_setup"),
            "--batch_size", "32", "--num_workers", "0", "--warmup_steps", "2", "--check_val_every_n_epoch", "1"]


@pytest.fixture
def in_run_folder(tiny, monkeypatch):
    """Runs started in this process write under ``tiny``, log to wandb offline without credentials, and
    leave the environment as they found it."""
    monkeypatch.chdir(tiny)
    monkeypatch.setenv("HOME", str(tiny))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv(RUN_ID_ENV, "")
    return tiny


# ------------------------------------------------------------------ flags

def run_entry_point(name, argv, monkeypatch):
    if name == "train_base":
        return train_base.main(argv)
    if name == "train_device_specific":
        return train_device_specific.main(argv)
    if name == "export_submission":
        return export_submission.main(argv)
    if name == "dataset.demo":
        return demo.main(argv)
    if name == "benchmark":
        monkeypatch.setattr(sys, "argv", ["benchmark.py", *argv])
        return load_file(REPO / "benchmarks" / "benchmark.py", "benchmark").main()
    monkeypatch.syspath_prepend(str(REPO / "submission_template"))  # the package's checks import each other
    return load_file(REPO / "submission_template" / f"{name}.py", name).main(argv)


# each with a flag shortened or mistyped; where argparse took the abbreviation, a bad value after it stops
# the command before it would start real work
MISTYPED = [
    ("train_base", ["--n_epoch", "3", "--batch_size", "x"], "--n_epochs"),
    ("train_device_specific", ["--train_device", "a", "--batch_size", "x"], "--train_devices"),
    ("train_device_specific", ["--evaluat", "--batch_size", "x"], "--evaluate"),
    ("export_submission", ["--ckpt", "x", "--submission_name", "A_B_task1", "--submission_index", "1"],
     "--ckpt_id or --ckpt_prefix"),
    ("dataset.demo", ["--scal", "2", "--seed", "x"], "--scale"),
    ("benchmark", ["--step", "3", "--batch_size", "x"], "--steps"),
    ("test_complexity", ["--submission_nam", "X_Y_task1", "--submission_index", "1"], "--submission_name"),
    ("evaluate_submission", ["--submission_name", "X_Y_task1", "--submission_index", "1", "--dev_set", "d",
                             "--eval_set_dir", "e"], "--dev_set_dir"),
]


@pytest.mark.parametrize("name, argv, meant", MISTYPED, ids=[f"{m[0]}-{m[1][0]}" for m in MISTYPED])
def test_every_entry_point_refuses_abbreviated_flags(name, argv, meant, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_entry_point(name, argv, monkeypatch)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "unrecognized arguments" in error
    assert f"did you mean {meant}?" in error
    assert not list(tmp_path.iterdir())  # nothing was started


def test_exact_flags_still_parse():
    args = parse_args(stage2_parser(""), ["--n_epochs=3", "--train_devices", "a", "b",
                                                                    "--evaluate", "--devices", "1"])
    assert args.n_epochs == 3 and args.train_devices == ["a", "b"] and args.evaluate and args.devices == 1


def option_help(help_text: str) -> dict:
    """``--flag`` -> its help entry, on one line."""
    entries, current = {}, None
    for line in help_text.splitlines():
        match = re.match(r"^  (--\w+)", line)
        if match:
            current = match.group(1)
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {flag: " ".join(text.split()) for flag, text in entries.items()}


@pytest.mark.parametrize("stage, script", [("base", train_base), ("device", train_device_specific)])
def test_help_shows_examples_stage_defaults_and_what_demo_changes(stage, script, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    parser = (stage1_parser if stage == "base" else stage2_parser)(script.__doc__)
    text = parser.format_help()
    examples = [line for line in script.__doc__.splitlines() if line.strip().startswith("python ")]
    assert len(examples) >= 2
    for line in examples:  # the usage examples, one per line as written
        assert line in text.splitlines()
    entries = option_help(text)
    for flag, value in STAGE_DEFAULTS[stage].items():
        assert f"(default: {value})" in entries[f"--{flag}"], entries[f"--{flag}"]
    for entry in entries.values():  # each default once, and never an empty one
        assert entry.count("default") <= 1, entry
        assert "(default: None)" not in entry and "(default: False)" not in entry, entry
    # a network flag has a default per network (models/registry.py)
    assert "cp_mobile=32" in entries["--base_channels"] and "(default: 0)" in entries["--timem"]
    for flag, value in DEMO_DEFAULTS[stage].items():
        assert f"--{flag} {value}" in entries["--demo"]


# ------------------------------------------------------------------ complexity limits

def test_over_limits_warning_says_which_limit_and_by_how_much():
    warning = over_limits_warning(model_complexity(Network(NetworkConfig(base_channels=40))))
    assert "47,952,328 MACs" in warning and "17,952,328 (60%) over the limit of 30,000,000" in warning
    assert "195,332 bytes" in warning and "67,332 (53%) over the limit of 128,000" in warning
    assert "teacher" in warning and "--evaluate" in warning and "export_submission.py" in warning
    assert over_limits_warning(model_complexity(Network())) is None
    narrow = over_limits_warning({"macs": 29_000_000, "param_bytes": 130_000})
    assert "MACs" not in narrow and "2,000 (2%) over the limit of 128,000" in narrow


def test_stage1_warns_before_anything_else(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DCASE25_DATASET_DIR", raising=False)
    with pytest.raises(DataError):  # no data set given: the run stops at its first check
        train_base.main(["--base_channels", "40"])
    out = capsys.readouterr().out
    assert out.count("WARNING: this model exceeds the complexity limits") == 1
    assert "47,952,328 MACs per 1-second clip, 17,952,328 (60%) over the limit" in out


@pytest.mark.slow
def test_stage2_warns_once_before_fine_tuning(in_run_folder, capsys):
    root = in_run_folder
    config = vars(parse_args(build_parser("base", ""), ["--base_channels", "40"]))
    general = root / "teacher.ckpt"
    torch.save({"state_dict": build_module(config).state_dict(), "hyper_parameters": config}, general)
    train_device_specific.main(["--ckpt_id", str(general), "--base_channels", "40", "--train_devices", "a",
                                "--n_epochs", "1", "--wandb_mode", "disabled", *data_flags(root)])
    out = capsys.readouterr().out
    assert out.count("WARNING: this model exceeds the complexity limits") == 1
    assert out.index("WARNING: this model exceeds") < out.index("=== Fine-tuning the model of device a ===")
    assert "| a | 47,952,328 | 97,666 | 195,332 | NO |" in out  # trained all the same


# ------------------------------------------------------------------ two stages in one process

@pytest.mark.slow
def test_both_stages_in_one_process_are_two_wandb_runs(in_run_folder):
    """scripts/demo.py calls both stages' main in one process: each must be a wandb run of its own."""
    root = in_run_folder
    flags = [*data_flags(root), "--n_epochs", "1", "--wandb_mode", "offline"]
    general_run, _ = train_base.main(flags)
    system_run, _ = train_device_specific.main(["--ckpt_id", general_run, "--train_devices", "a", *flags])
    [stage1_folder], [stage2_folder] = offline_runs(root, general_run), offline_runs(root, system_run)
    stage1, stage2 = read_run(stage1_folder), read_run(stage2_folder)
    for _ in range(60):  # wandb's service may still be writing the end of the run that finished last
        if stage2["finished"]:
            break
        time.sleep(0.5)
        stage2 = read_run(stage2_folder)
    assert (stage1["id"], stage1["name"]) == (general_run, "Baseline_general")
    assert (stage2["id"], stage2["name"]) == (system_run, "Baseline_multi_device")
    assert stage1["finished"] and stage2["finished"]
    stage2_only = {"ckpt_id", "train_devices", "complexity"}
    assert stage2_only <= stage2["config"] and not stage2_only & stage1["config"]
    assert "macs" in stage1["config"]
    assert "test/macro_avg_acc" in stage1["metrics"] and "general/test/macro_avg_acc" not in stage1["metrics"]
    assert {"a/train/loss", "general/test/macro_avg_acc", "test/macro_avg_acc"} <= stage2["metrics"]


# ------------------------------------------------------------------ predictions of a checkpoint file

@pytest.mark.slow
def test_predictions_of_checkpoint_files_are_named_after_the_file(in_run_folder):
    root = in_run_folder
    config = vars(parse_args(build_parser("device", ""), []))
    system = MultiDeviceModel(Network(), TRAIN_DEVICES)
    models = root / "my_models"
    models.mkdir()
    checkpoint = {"state_dict": build_module(config, model=system).state_dict(), "hyper_parameters": config,
                  "complete": True}
    torch.save(checkpoint, models / "first.ckpt")
    shutil.copy(models / "first.ckpt", models / "second.ckpt")
    for name in ("first", "second"):  # two checkpoints in one folder: two predictions folders
        train_device_specific.main(["--ckpt_id", str(models / f"{name}.ckpt"), "--evaluate", "--eval_dir",
                                    str(root / "demo_data" / "eval"), "--num_workers", "0"])
        info = json.loads((root / "predictions" / name / "info.json").read_text())
        assert info["run_id"] is None and info["checkpoint"] == str(models / f"{name}.ckpt")
        assert (root / "predictions" / name / "output.csv").is_file()
    assert not (root / "predictions" / "my_models").exists()
