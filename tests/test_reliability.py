"""Interruptions, resuming, non-finite losses, reproducibility and error messages."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY_NETWORK
from torch.utils.data import DataLoader

import train_base
import train_device_specific
from helpers.setup.checkpoints import CheckpointError, resolve_checkpoint, save_checkpoint
from helpers.setup.console import run_cli
from helpers.setup.flags import build_parser
from helpers.setup.trainer import make_trainer
from helpers.training.builder import build_module
from helpers.training.module import NonFiniteLossError

pytestmark = pytest.mark.slow  # every test of this module starts processes or trains

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--demo", *TINY_NETWORK, "--batch_size", "16", "--num_workers", "0", "--warmup_steps", "2",
         "--check_val_every_n_epoch", "10", "--wandb_mode", "disabled"]


@pytest.fixture(scope="module")
def workdir(workdir_factory):
    return workdir_factory("reliability")


def command(script, args):
    return [sys.executable, str(REPO / script), *args]


def environment(workdir):
    return {**{k: v for k, v in os.environ.items() if not k.startswith("WANDB")}, "HOME": str(workdir),
            "PYTHONUNBUFFERED": "1"}


def run(script, args, workdir, expect_ok=True):
    result = subprocess.run(command(script, args), cwd=workdir, env=environment(workdir), capture_output=True,
                            text=True, timeout=600)
    if expect_ok:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def interrupt_when(script, args, workdir, ready):
    """Start ``script``, send Ctrl-C (SIGINT) once ``ready()`` holds, return the finished process."""
    # Ctrl-C as in a terminal: the child starts with the default SIGINT disposition, whatever this process
    # has; children inherit an ignored SIGINT (a shell's background job starts so, and Lightning ignores
    # SIGINT for good once it has caught a KeyboardInterrupt)
    process = subprocess.Popen(command(script, args), cwd=workdir, env=environment(workdir),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not ready() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


def steps_per_epoch(workdir, batch_size=16):
    n = len(pd.read_csv(workdir / "demo_data" / "split_setup" / "split25.csv", sep="\t"))
    return -(-n // batch_size)


def test_stage1_interrupted_then_resumed_ends_like_an_uninterrupted_run(workdir, monkeypatch, capsys):
    args = [*SMALL, "--project_name", "Resume1", "--run_id", "stop1", "--n_epochs", "12"]
    last = workdir / "Resume1" / "stop1" / "checkpoints" / "last.ckpt"
    code, output = interrupt_when("train_base.py", args, workdir, last.is_file)
    assert code != 0 and "--resume stop1" in output
    stopped_at = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < stopped_at < 12 * steps_per_epoch(workdir)  # a usable checkpoint from before the end

    monkeypatch.chdir(workdir)  # the resumed run in this process, for the suite's time
    train_base.main([*SMALL, "--project_name", "Resume1", "--resume", "stop1", "--n_epochs", "12"])
    out = capsys.readouterr().out
    assert "Continuing run stop1" in out and "Run id: stop1" in out
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 12 * steps_per_epoch(workdir)
    results = json.loads((workdir / "Resume1" / "stop1" / "results.json").read_text())
    assert results["results"]["General Model"]["count"] > 0


def test_stage2_resumes_at_the_device_it_was_on(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)  # the steps that need no process of their own run in this one, for the suite's time
    train_base.main([*SMALL, "--project_name", "Resume2", "--run_id", "base2", "--n_epochs", "1"])
    args = [*SMALL, "--project_name", "Resume2", "--ckpt_id", "base2", "--run_id", "dev2", "--n_epochs", "30",
            "--train_devices", "a", "b", "c"]
    phase_b = workdir / "Resume2" / "dev2" / "checkpoints" / "last-b.ckpt"
    code, output = interrupt_when("train_device_specific.py", args, workdir, phase_b.is_file)
    assert code != 0
    container = torch.load(workdir / "Resume2" / "dev2" / "checkpoints" / "last.ckpt", weights_only=True)
    assert container["completed_devices"] == ["a"] and container["complete"] is False

    # a stopped stage-2 run cannot be used for predictions yet
    with pytest.raises(SystemExit, match=r"^error: .*--resume dev2"):
        run_cli(lambda: train_device_specific.main([*SMALL, "--project_name", "Resume2", "--ckpt_id", "dev2",
                                                    "--evaluate", "--eval_dir", "demo_data/eval"]))

    train_device_specific.main([*SMALL, "--project_name", "Resume2", "--resume", "dev2", "--n_epochs", "30",
                                "--train_devices", "a", "b", "c"])
    out = capsys.readouterr().out
    skipped = next(line for line in out.splitlines() if line.startswith("Device a "))
    assert "skipped" in skipped  # the device and what happened to it
    assert "=== Fine-tuning the model of device b ===" in out and "Run id: dev2" in out
    container = torch.load(workdir / "Resume2" / "dev2" / "checkpoints" / "last.ckpt", weights_only=True)
    assert container["completed_devices"] == ["a", "b", "c"] and container["complete"] is True
    assert not phase_b.exists()
    assert (workdir / "Resume2" / "dev2" / "results.json").is_file()


def test_two_seeded_runs_give_identical_test_metrics(workdir):
    """Each in a process of its own, as a user runs them (with DataLoader workers); the first builds the
    audio cache, the second finds it."""
    results = []
    for project in ("SeedA", "SeedB"):
        out = run("train_base.py", [*SMALL, "--project_name", project, "--seed", "7", "--n_epochs", "2",
                                    "--num_workers", "2", "--cache_dir", "seed_cache"], workdir).stdout
        run_id = re.search(r"Run id: (\w+)", out).group(1)
        results.append(json.loads((workdir / project / run_id / "results.json").read_text())["results"])
    assert results[0] == results[1]


class NanAfterFirstEpoch(torch.utils.data.Dataset):
    """Clean clips in the first epoch, NaN waveforms afterwards."""

    def __init__(self):
        self.epoch_of = {}
        self.calls = 0

    def __len__(self):
        return 8

    def __getitem__(self, i):
        self.calls += 1
        value = float("nan") if self.calls > len(self) else 0.1
        return torch.full((1, 44100), value) * torch.randn(1, 44100), i % 10, "a", f"{i}.wav"


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser("base", "").parse_args(["--n_epochs", "3", "--project_name", "nan", "--accelerator", "cpu",
                                                "--warmup_steps", "1"])
    args.devices = 1
    trainer = make_trainer(args, logger=False, run_id="nanrun", enable_progress_bar=False)
    module = build_module(vars(args))
    with pytest.raises(NonFiniteLossError, match="last checkpoint"):
        trainer.fit(module, DataLoader(NanAfterFirstEpoch(), batch_size=4))
    checkpoint = torch.load(tmp_path / "nan" / "nanrun" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2  # the first epoch, before the NaN batches
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_errors_are_one_message_not_a_traceback(workdir, monkeypatch):
    missing = run("train_device_specific.py", [*SMALL, "--ckpt_id", "nosuchrun"], workdir, expect_ok=False)
    assert missing.returncode != 0 and missing.stderr.startswith("error: --ckpt_id nosuchrun")
    assert "Traceback" not in missing.stderr
    # more of them through the scripts' same wrapper, in this process (for the suite's time)
    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit, match=r"^error: .*25 % split"):
        run_cli(lambda: train_base.main([*SMALL, "--subset", "50"]))
    with pytest.raises(SystemExit, match=r"^error: .*no run of this script"):
        run_cli(lambda: train_base.main([*SMALL, "--project_name", "Empty", "--resume"]))


def test_checkpoint_id_matching_several_runs_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for run_id in ("abc111", "abc222", "xyz333"):
        save_checkpoint({"state_dict": {}}, tmp_path / "p" / run_id / "checkpoints" / "last.ckpt")
    assert resolve_checkpoint("xyz", "p") == Path("p/xyz333/checkpoints/last.ckpt")
    with pytest.raises(CheckpointError, match="matches several runs.*(abc111.*abc222|abc222.*abc111)"):
        resolve_checkpoint("abc", "p")


def test_runs_started_in_one_process_get_their_own_ids(tmp_path, monkeypatch):
    from helpers.setup.runs import start_run
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DCASE25_RUN_ID", raising=False)
    args = build_parser("base", "").parse_args(["--project_name", "p"])
    first, _ = start_run(args, "base")
    second, _ = start_run(args, "device")
    assert first != second
    assert json.loads((tmp_path / "p" / second / "run.json").read_text())["stage"] == "device"
    args.run_id = first
    with pytest.raises(CheckpointError, match="other training script"):
        start_run(args, "device")
