"""Both training scripts and the evaluation, run as a user runs them (subprocesses, wandb offline)
on a tiny demo set; the steps whose console other runs already show call the scripts' main in this
process (their docstrings say so). The runs are shared by the tests of this module."""
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_NETWORK
from wandb_offline import offline_runs, read_run

import export_submission as export_command
import train_base
import train_device_specific
from dataset.dcase25 import CLASSES, DEVICES
from dataset.demo import write_demo_impulse_responses
from helpers import write_teacher_logits
from helpers.outputs.complexity import model_complexity
from models.registry import build_network

pytestmark = pytest.mark.slow  # every test of this module starts processes or trains

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n_epochs", "2", *TINY_NETWORK, "--batch_size", "16", "--num_workers", "0", "--warmup_steps", "2",
        "--check_val_every_n_epoch", "1", "--wandb_mode", "offline"]
TINY_COMPLEXITY = model_complexity(build_network("cp_mobile", {"base_channels": 8}), (1, 1, 32, 51))
AUGMENTED = ["--dir_dir", "irs", "--dir_p", "1", "--dir_devices", "a", "b", "--mixup_alpha", "0.3"]  # DIR and mixup on


def run_script(script, args, cwd):
    """Run ``script`` as a user does; returns what it printed (stdout, then stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(HOME=str(cwd), WANDB_SILENT="true", PYTHONUNBUFFERED="1")  # no credentials: offline by default
    result = subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def printed_command(out, script):
    """The command line for ``script`` that a run printed as the next step, ready to run here."""
    line = next(line.strip() for line in out.splitlines() if line.strip().startswith(f"python {script} "))
    return shlex.split(line)[2:]


def check_console(out):
    """What a user reads: progress bars and the project's messages; no warnings raised by the project's own
    code, no Lightning advertising, no warning about the run's own checkpoint folder."""
    assert "Epoch 0" in out or "Predictions for" in out  # progress bars (training) or the evaluation's message
    own_warnings = [line for line in out.splitlines()
                    if str(REPO) in line and re.search(r"\.py:\d+: ", line) and "site-packages" not in line]
    assert not own_warnings, own_warnings
    for noise in ("💡 Tip", "litlogger", "litmodels", "Checkpoint directory", "is not writable",
                  "smaller than the logging interval"):
        assert noise not in out, noise


@pytest.fixture(scope="module")
def workdir(workdir_factory):
    root = workdir_factory("e2e")
    write_demo_impulse_responses(root / "irs", count=4)
    return root


@pytest.fixture(scope="module")
def stage1(workdir):
    out = run_script("train_base.py", ["--demo", "--seed", "1", *TINY], workdir)
    run_id = re.search(r"Run id: (\w+)", out).group(1)
    return run_id, out


@pytest.fixture(scope="module")
def stage2(workdir, stage1):
    out = run_script("train_device_specific.py",
                     ["--demo", "--ckpt_id", stage1[0], "--n_epochs", "1", *TINY[2:], *AUGMENTED], workdir)
    run_id = re.search(r"Run id: (\w+)", out).group(1)
    return run_id, out


def check_results(results):
    assert {f"acc.{c}" for c in CLASSES} <= results.keys()
    assert {f"acc.{d}" for d in DEVICES} <= results.keys()
    assert {"acc", "macro_avg_acc", "acc.real", "acc.seen", "acc.unseen", "loss.airport", "loss.s4"} <= results.keys()
    assert math.isclose(results["macro_avg_acc"], sum(results[f"acc.{c}"] for c in CLASSES) / 10, rel_tol=1e-9)
    assert all(0.0 <= results[f"acc.{k}"] <= 1.0 for k in CLASSES + DEVICES)


def check_confusion(saved, system, workdir):
    """The confusion counts of results.json cover every test clip once: per true class and per device
    they add up to the clips of the test split."""
    meta = pd.read_csv(workdir / "demo_data" / "meta.csv", sep="\t")
    test = pd.read_csv(workdir / "demo_data" / "split_setup" / "test.csv", sep="\t")[["filename"]].merge(meta)
    matrices = saved["confusion"]["systems"][system]
    per_class = [sum(sum(m[i]) for m in matrices.values()) for i in range(len(CLASSES))]
    assert per_class == [int((test["scene_label"] == c).sum()) for c in CLASSES]
    assert {d: sum(map(sum, m)) for d, m in matrices.items()} == test["source_label"].value_counts().to_dict()
    return matrices


def test_stage1_writes_checkpoint_results_and_next_command(workdir, stage1):
    run_id, out = stage1
    ckpt = workdir / "DCASE25_Task1" / run_id / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    n_train = len(pd.read_csv(workdir / "demo_data" / "split_setup" / "split25.csv", sep="\t"))
    assert checkpoint["global_step"] == 2 * math.ceil(n_train / 16)  # two full epochs of batch 16
    assert "model.stages.s1.b1.block.0.0.weight" in checkpoint["state_dict"]
    results = json.loads((workdir / "DCASE25_Task1" / run_id / "results.json").read_text())
    check_results(results["results"]["General Model"])
    assert results["complexity"]["general"] == TINY_COMPLEXITY  # the network the flags describe
    assert "| General Model |" in out and "Macro Avg. Accuracy" in out
    assert f"python train_device_specific.py --ckpt_id {run_id} --demo" in out
    # wandb ran offline and logged on the trainer's step axis
    assert list((workdir / "wandb").glob(f"offline-run-*-{run_id}"))
    # figures: beside results.md, shown in it, logged to the offline wandb run as images
    check_confusion(results, "General Model", workdir)
    run_dir = workdir / "DCASE25_Task1" / run_id
    for name in ("confusion_general_model", "accuracy_map_general_model"):
        assert (run_dir / f"{name}.png").is_file() and f"]({name}.png)" in (run_dir / "results.md").read_text()
        assert list((workdir / "wandb").glob(f"offline-run-*-{run_id}/files/media/images/test/{name}_*.png"))
    check_console(out)


def test_stage2_results_and_unseen_devices(workdir, stage2):
    run_id, out = stage2
    run_dir = workdir / "DCASE25_Task1" / run_id
    results = json.loads((run_dir / "results.json").read_text())["results"]
    general, system = results["General Model"], results["Device-specific Models"]
    check_results(general)
    check_results(system)
    for device in ("s4", "s5", "s6"):
        assert system[f"acc.{device}"] == general[f"acc.{device}"]
        assert system[f"loss.{device}"] == pytest.approx(general[f"loss.{device}"], rel=1e-6)
    assert system["acc.unseen"] == general["acc.unseen"]
    saved = json.loads((run_dir / "results.json").read_text())
    general_counts = check_confusion(saved, "General Model", workdir)
    system_counts = check_confusion(saved, "Device-specific Models", workdir)
    assert all(system_counts[d] == general_counts[d] for d in ("s4", "s5", "s6"))  # the general model there
    assert len(list(run_dir.glob("*.png"))) == 5 and (run_dir / "accuracy_map_difference.png").is_file()
    assert "| Device-specific Models |" in (run_dir / "results.md").read_text()
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert "model.device_models.s3.feed_forward.0.weight" in state and "model.base_model.in_c.0.0.weight" in state
    c = TINY_COMPLEXITY
    assert f"| s3 | {c['macs']:,} | {c['params']:,} | {c['param_bytes']:,} | yes |" in out
    # DIR and mixup were on, and the run's config records them
    assert "DIR augmentation: 4 impulse responses from irs" in out
    config = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                        weights_only=True)["hyper_parameters"]
    assert (config["dir_p"], config["dir_devices"], config["mixup_alpha"]) == (1.0, ["a", "b"], 0.3)
    check_console(out)


def test_compare_stage1_and_stage2_runs(workdir, stage1, stage2):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "helpers.compare_runs", stage1[0], stage2[0]], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert "--lr" in lines[0] and "--stage1.lr" not in lines[0]  # stage 2 has its own recipe, one stage-1 run
    assert [line.split(" | ")[2] for line in lines[1:]] == ["General Model", "General Model", "Device-specific Models"]
    assert (workdir / "comparison.md").is_file() and (workdir / "comparison.png").stat().st_size > 10_000


def test_stage2_logs_the_training_loss_of_every_device(workdir, stage2):
    """Each device has only a few batches per epoch here, far fewer than Lightning's default logging
    interval of 50 steps: the interval follows the epoch length, so every device has its curve."""
    run_id, _ = stage2
    [folder] = offline_runs(workdir, run_id)
    metrics = read_run(folder)["metrics"]
    assert {f"{device}/train/loss" for device in ("a", "b", "c", "s1", "s2", "s3")} <= metrics
    assert "train/loss" not in metrics  # stage 1's curve is not in stage 2's run


def test_stage2_prints_the_next_commands_and_they_work(workdir, stage2, monkeypatch):
    """The printed export command, run by the script's main in this process (for the suite's time)."""
    run_id, out = stage2
    export = printed_command(out, "export_submission.py")
    assert export[:2] == ["--ckpt_id", run_id]
    export[export.index("--submission_name") + 1] = "Demo_DEMO_task1"
    monkeypatch.chdir(workdir)
    export_command.main(export)
    package = workdir / "submissions" / "Demo_DEMO_task1"
    assert (package / "Demo_DEMO_task1" / "Demo_DEMO_task1_1.py").is_file()
    assert (package / "Demo_DEMO_task1" / "resources" / "test.csv").read_bytes() == \
        (workdir / "demo_data" / "split_setup" / "test.csv").read_bytes()


def test_resuming_a_finished_run_changes_nothing(workdir, stage2, monkeypatch, capsys):
    """In this process, for the suite's time (no wandb run may start: that is checked below)."""
    run_id, _ = stage2
    run_dir = workdir / "DCASE25_Task1" / run_id
    before = {name: (run_dir / name).read_bytes() for name in ("results.json", "results.md", "checkpoints/last.ckpt")}
    wandb_runs = offline_runs(workdir, run_id)
    monkeypatch.chdir(workdir)
    train_device_specific.main(["--demo", "--resume", run_id, *TINY[2:]])
    out = capsys.readouterr().out
    assert f"Run {run_id} has finished already" in out and "nothing was changed" in out
    assert "Testing" not in out and "Continuing run" not in out
    assert printed_command(out, "train_device_specific.py")[:3] == ["--ckpt_id", run_id, "--evaluate"]
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert offline_runs(workdir, run_id) == wandb_runs  # no new wandb run


def test_evaluation_predictions(workdir, stage2, monkeypatch):
    run_id, stage2_out = stage2
    command = printed_command(stage2_out, "train_device_specific.py")  # the command stage 2 printed
    # the front end's flags are carried (the network itself comes from the checkpoint)
    assert command[:6] == ["--ckpt_id", run_id, "--evaluate", "--eval_dir", "demo_data/eval", "--demo"]
    front_end = dict(zip(TINY_NETWORK[2::2], TINY_NETWORK[3::2]))  # TINY_NETWORK without --base_channels 8
    assert dict(zip(command[6::2], command[7::2])) == front_end
    out = run_script("train_device_specific.py", [*command, "--num_workers", "0"], workdir)
    check_console(out)
    folder = workdir / "predictions" / run_id
    table = pd.read_csv(folder / "output.csv", sep="\t")
    listed = pd.read_csv(workdir / "demo_data" / "eval" / "evaluation_setup" / "fold1_test.csv", sep="\t")
    assert list(table.columns) == ["filename", "scene_label"] + CLASSES
    assert table["filename"].tolist() == listed["filename"].tolist()
    probabilities = table[CLASSES].to_numpy()
    assert abs(probabilities.sum(axis=1) - 1).max() < 1e-5
    assert (table["scene_label"] == [CLASSES[i] for i in probabilities.argmax(axis=1)]).all()
    info = json.loads((folder / "info.json").read_text())
    assert info["complexity"]["a"]["param_bytes"] == TINY_COMPLEXITY["param_bytes"]
    assert info["test_results"]["Device-specific Models"]["macro_avg_acc"] >= 0
    assert (folder / "model_state_dict.pt").is_file()
    assert str(folder / "output.csv") in out
    # a second run does not overwrite the folder without --overwrite (in this process, for the suite's time)
    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit, match="--overwrite"):
        train_device_specific.main(["--demo", "--ckpt_id", run_id, "--evaluate", "--eval_dir",
                                    str(workdir / "demo_data" / "eval")])
    assert table.equals(pd.read_csv(folder / "output.csv", sep="\t"))  # the first run's file is kept


def test_stage1_with_two_ddp_processes(workdir):
    """Two CPU processes (gloo): every test clip is counted exactly once, files are written once."""
    out = run_script("train_base.py", ["--demo", "--project_name", "DDP", "--accelerator", "cpu", "--devices", "2",
                                       "--strategy", "ddp", *TINY[:-2], "--wandb_mode", "disabled", *AUGMENTED],
                     workdir)
    assert out.count("Run id:") == 1 and out.count("DIR augmentation: 4 impulse responses") == 1
    run_id = re.search(r"Run id: (\w+)", out).group(1)
    results = json.loads((workdir / "DDP" / run_id / "results.json").read_text())["results"]["General Model"]
    n_test = len(pd.read_csv(workdir / "demo_data" / "split_setup" / "test.csv", sep="\t"))
    assert results["count"] == n_test
    check_results(results)
    saved = json.loads((workdir / "DDP" / run_id / "results.json").read_text())
    check_confusion(saved, "General Model", workdir)  # counts reduced over both processes, each clip once
    assert [p.name for p in (workdir / "DDP").iterdir()] == [run_id]
    assert (workdir / "DDP" / run_id / "checkpoints" / "last.ckpt").is_file()


def test_bf16_mixed_precision_on_cpu_with_the_audio_cache(workdir, monkeypatch, capsys):
    """In this process, for the suite's time (the runs above cover the console)."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("DCASE25_RUN_ID", "")
    run_id, _ = train_base.main(["--demo", "--project_name", "BF16", "--precision", "bf16-mixed", "--cache_dir",
                                 "audio_cache", "--n_epochs", "1", *TINY[2:-2], "--wandb_mode", "disabled",
                                 *AUGMENTED])
    assert "impulse responses from irs (resampled to 16000 Hz" in capsys.readouterr().out  # the cache's rate
    check_results(json.loads((workdir / "BF16" / run_id / "results.json").read_text())["results"]["General Model"])
    assert len(list((workdir / "audio_cache").glob("*.npy"))) == 2  # the training split and the test split


def test_distilled_stage1_and_stage2(workdir, stage1, stage2, monkeypatch, capsys):
    """The runs above as teachers: the general one's logits distil a stage-1 student, the device-specific
    one's (each clip through its device's model) distil that student's stage 2. In this process (the
    subprocess runs above cover the console), for the suite's time."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("DCASE25_RUN_ID", "")
    split = workdir / "demo_data" / "split_setup"
    names = pd.concat([pd.read_csv(split / f, sep="\t")["filename"] for f in ("split25.csv", "test.csv")])
    write_teacher_logits.main([stage1[0], "--demo", "--out", "general.tsv", "--num_workers", "0"])
    assert f"| {stage1[0]} |" in capsys.readouterr().out
    general = pd.read_csv(workdir / "general.tsv", sep="\t", index_col="filename")
    assert list(general.columns) == CLASSES and sorted(general.index) == sorted(names)

    kd = ["--project_name", "KD", "--teacher_logits", "general.tsv", "--kd_lambda", "0.5", *TINY[2:-2],
          "--n_epochs", "1", "--wandb_mode", "disabled"]
    student, _ = train_base.main(["--demo", "--seed", "2", *kd])
    out = capsys.readouterr().out
    assert "Distilling from general.tsv" in out and "0.5 * label loss + 0.5 * distillation loss" in out
    check_results(json.loads((workdir / "KD" / student / "results.json").read_text())["results"]["General Model"])
    saved = torch.load(workdir / "KD" / student / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["hyper_parameters"]["teacher_logits"] == "general.tsv"

    write_teacher_logits.main([stage2[0], "--demo", "--out", "devices.tsv", "--num_workers", "0"])
    devices = pd.read_csv(workdir / "devices.tsv", sep="\t", index_col="filename").loc[general.index]
    unseen = general.index.str.contains(r"-s[456]\.wav$")
    assert unseen.any() and np.allclose(devices[unseen], general[unseen], rtol=1e-4, atol=1e-5)  # general model
    assert not np.allclose(devices[~unseen], general[~unseen], rtol=1e-4, atol=1e-5)  # their device's model
    kd[3] = "devices.tsv"
    capsys.readouterr()
    run_id, _ = train_device_specific.main(["--demo", "--ckpt_id", student, *kd])
    assert "Distilling from devices.tsv" in capsys.readouterr().out
    results = json.loads((workdir / "KD" / run_id / "results.json").read_text())
    check_results(results["results"]["Device-specific Models"])
