"""The whole chain in one process, on the session's demo set with a tiny network and one epoch, fast enough
for the fast tier: stage 1, stage 2 on two devices, the evaluation-set predictions, a teacher file, the
export, the comparison, the figures and the complexity table. The same steps as a user runs them, with
deeper checks, are in test_end_to_end.py (slow)."""
import json
import os

import pandas as pd
import pytest
import torch
from conftest import TINY_NETWORK

import export_submission
import train_base
import train_device_specific
from helpers import compare_runs, complexity_table, figures, write_teacher_logits

FLAGS = ["--demo", *TINY_NETWORK, "--n_epochs", "1", "--batch_size", "16", "--num_workers", "0",
         "--warmup_steps", "1", "--check_val_every_n_epoch", "1", "--wandb_mode", "disabled"]


@pytest.fixture(scope="module")
def chain(workdir_factory):
    """Stage 1 and stage 2 (devices a and b), run in a working folder of their own."""
    root, before, environment = workdir_factory("chain"), os.getcwd(), dict(os.environ)
    os.chdir(root)
    try:
        general, _ = train_base.main(["--seed", "1", *FLAGS])
        system, results = train_device_specific.main(["--ckpt_id", general, "--train_devices", "a", "b", *FLAGS])
        yield {"root": root, "general": general, "system": system, "results": results}
    finally:
        os.chdir(before)
        os.environ.clear()
        os.environ.update(environment)


@pytest.fixture
def in_chain(chain, monkeypatch):
    monkeypatch.chdir(chain["root"])
    return chain


def test_both_stages_write_their_results_and_checkpoints(in_chain):
    root = in_chain["root"]
    stage1 = json.loads((root / "DCASE25_Task1" / in_chain["general"] / "results.json").read_text())
    assert list(stage1["results"]) == ["General Model"] and stage1["results"]["General Model"]["count"] == 90
    assert list(in_chain["results"]) == ["General Model", "Device-specific Models"]
    container = torch.load(root / "DCASE25_Task1" / in_chain["system"] / "checkpoints" / "last.ckpt",
                           weights_only=True)
    assert container["completed_devices"] == ["a", "b"] and container["complete"]
    assert container["network"]["config"]["base_channels"] == 8  # the network of stage 1, from its checkpoint
    # devices without a model of their own are computed by the general model: the same figures
    general, system = in_chain["results"]["General Model"], in_chain["results"]["Device-specific Models"]
    assert all(general[f"acc.{d}"] == system[f"acc.{d}"] for d in ("c", "s1", "s4"))


def test_evaluation_set_predictions(in_chain, capsys):
    out_csv = train_device_specific.main(["--ckpt_id", in_chain["system"], "--evaluate", "--eval_dir",
                                          "demo_data/eval", *FLAGS])
    table = pd.read_csv(out_csv, sep="\t")
    assert len(table) == 10 and table.columns[:2].tolist() == ["filename", "scene_label"]
    assert table.iloc[:, 2:].sum(axis=1).round(4).eq(1).all()  # softmax probabilities
    assert "Predictions for 10 files" in capsys.readouterr().out


def test_teacher_file_of_a_device_specific_run(in_chain):
    out = write_teacher_logits.main([in_chain["system"], "--out", "teacher.tsv", *FLAGS])
    table = pd.read_csv(out, sep="\t")
    assert len(table) == 80 + 90 and table.shape[1] == 11  # every training and test clip, ten classes


def test_export_compare_figures_and_complexity(in_chain, capsys):
    package = export_submission.main(["--ckpt_id", in_chain["system"], "--submission_name", "Chain_TEST_task1",
                                      "--submission_index", "1"])
    assert (package / "Chain_TEST_task1" / "Chain_TEST_task1_1.py").is_file()
    assert (package / "Chain_TEST_task1" / "models" / "cp_mobile.py").is_file()
    table = compare_runs.main([in_chain["general"], in_chain["system"], "--out", "chain_comparison"])
    assert table.count("| General Model |") == 2 and "| Device-specific Models |" in table
    drawn = figures.main([in_chain["system"], "--out_dir", "figures"])
    assert {p.name for p in drawn} >= {"accuracy_map_difference.png", "confusion_general_model.png"}
    complexity_table.main([])
    assert "**61,148** | **29,419,156**" in capsys.readouterr().out  # the baseline's table
