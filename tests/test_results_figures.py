"""Result figures and the comparison of runs: confusion counts in results.json, the PNG files, and
``python -m helpers.compare_runs`` on small run folders written by the project's own result writer."""
import json
import math
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from dataset.dcase25 import CLASSES, DEVICE_GROUPS, DEVICES
from helpers import compare_runs as compare_command
from helpers.compare_runs import compare
from helpers.figures import redraw
from helpers.outputs.drawing import CONFUSION_SIZE, DPI, MAP_SIZE
from helpers.outputs.results import write_results
from helpers.training.metrics import SceneDeviceAccuracy

COMPLEXITY = {"general": {"macs": 29_419_156, "params": 61_148, "param_bytes": 122_296}}


def metric_after_test(seed, skill):
    """A metric after a 'final test' of 600 clips over the nine devices and an unknown one; about
    ``skill`` of the predictions right."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (600,), generator=gen)
    logits = torch.randn(600, 10, generator=gen)
    right = torch.rand(600, generator=gen) < skill
    logits[right, labels[right]] += 10
    pool = DEVICES + ["zz"]
    devices = [pool[int(i)] for i in torch.randint(0, len(pool), (600,), generator=gen)]
    metric = SceneDeviceAccuracy()
    for start in range(0, 600, 64):  # in batches, as a test loop feeds it
        metric.update(logits[start:start + 64], labels[start:start + 64], devices[start:start + 64])
    return metric


def png_size(path):
    height, width = imread(path).shape[:2]
    return width, height


@pytest.fixture(scope="module")
def stage2_like_run(tmp_path_factory):
    """results.json, results.md and the figures of a run with both systems, as stage 2 writes them."""
    run_dir = tmp_path_factory.mktemp("figures") / "run2"
    metrics = {"General Model": metric_after_test(0, 0.4), "Device-specific Models": metric_after_test(1, 0.6)}
    systems = {name: m.compute() for name, m in metrics.items()}
    confusion = {name: m.confusion_counts() for name, m in metrics.items()}

    class Logger:  # what the training scripts' wandb logger receives
        def __init__(self):
            self.images = {}

        def log_image(self, key, images):
            self.images[key] = images

    logger = Logger()
    write_results(run_dir, "run2", systems, COMPLEXITY, confusion=confusion, flags={"seed": 3},
                  logger=logger)
    return run_dir, logger


def test_results_json_confusion_adds_up_to_counts_and_accuracies(stage2_like_run):
    run_dir, _ = stage2_like_run
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["confusion"]["classes"] == CLASSES and saved["confusion"]["rows"] == "true class"
    assert saved["flags"] == {"seed": 3}
    for system, results in saved["results"].items():
        matrices = saved["confusion"]["systems"][system]
        assert set(matrices) == set(DEVICES) | {"unknown"}
        total = [[sum(m[i][j] for m in matrices.values()) for j in range(10)] for i in range(10)]
        assert sum(map(sum, total)) == results["count"] == 600
        for i, name in enumerate(CLASSES):
            row_sum = sum(total[i])
            assert row_sum == results[f"count.{name}"]  # rows: the true class
            assert total[i][i] / row_sum == pytest.approx(results[f"acc.{name}"], rel=1e-12)
        for device, matrix in matrices.items():
            n = sum(map(sum, matrix))
            assert n == results[f"count.{device}"]
            assert sum(matrix[i][i] for i in range(10)) / n == pytest.approx(results[f"acc.{device}"], rel=1e-12)
        for group in ("real", "seen", "unseen"):
            members = [d for d, g in DEVICE_GROUPS.items() if g == group]
            assert sum(sum(map(sum, matrices[d])) for d in members) == results[f"count.{group}"]
        macro = sum(total[i][i] / sum(total[i]) for i in range(10)) / 10
        assert macro == pytest.approx(results["macro_avg_acc"], rel=1e-12)


def test_figures_are_written_shown_in_results_md_and_logged(stage2_like_run):
    run_dir, logger = stage2_like_run
    expected = {"confusion_general_model.png": CONFUSION_SIZE, "confusion_device_specific_models.png": CONFUSION_SIZE,
                "accuracy_map_general_model.png": MAP_SIZE, "accuracy_map_device_specific_models.png": MAP_SIZE,
                "accuracy_map_difference.png": MAP_SIZE}
    assert sorted(p.name for p in run_dir.glob("*.png")) == sorted(expected)
    markdown = (run_dir / "results.md").read_text()
    for name, (width, height) in expected.items():
        assert png_size(run_dir / name) == (round(width * DPI), round(height * DPI))
        assert f"]({name})" in markdown
        assert logger.images[f"test/{Path(name).stem}"] == [str(run_dir / name)]
    assert not list(run_dir.glob(".*tmp"))


def test_figures_are_redrawn_from_results_json_alone(stage2_like_run, tmp_path):
    run_dir, _ = stage2_like_run
    paths = redraw(str(run_dir), out_dir=tmp_path, only=["accuracy_map_difference"])
    assert paths == [tmp_path / "accuracy_map_difference.png"]
    assert png_size(paths[0]) == (round(MAP_SIZE[0] * DPI), round(MAP_SIZE[1] * DPI))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy_map_difference.png"]


# ------------------------------------------------------------------ comparing runs

def finished_run(project, run_id, macro, flags, stage1_dir=None):
    """A run folder as a final test leaves it (results.json by ``write_results``), with the given
    macro-average accuracy: every class and device at that accuracy, groups too."""
    results = {"count": 900.0, "acc": macro, "macro_avg_acc": macro}
    results.update({f"acc.{key}": macro for key in CLASSES + DEVICES + ["real", "seen", "unseen"]})
    results["acc.real"] = macro + 0.1
    systems = {"General Model": results}
    extra = {}
    if stage1_dir is not None:
        systems["Device-specific Models"] = {**results, "macro_avg_acc": macro + 0.02}
        extra["general_checkpoint"] = str(stage1_dir / "checkpoints" / "last.ckpt")
    all_flags = {"run_id": run_id, "seed": None, "lr": 0.005, "mixstyle_p": 0.4, "n_epochs": 4,
                 "experiment_name": "Baseline_general", "num_workers": 2, **flags}
    write_results(project / run_id, run_id, systems, COMPLEXITY, flags=all_flags, **extra)
    return project / run_id


def table_rows(table):
    return [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| #")]


def test_compare_lists_two_runs_and_the_flags_they_differ_in(tmp_path):
    project = tmp_path / "P"
    finished_run(project, "aaaa1111", 0.50, {"seed": 1})
    finished_run(project, "bbbb2222", 0.42, {"seed": 2, "mixstyle_p": 0.0, "num_workers": 0})
    table = compare(["aaaa", str(project / "bbbb2222")], project_name=str(project), out=str(tmp_path / "cmp"))
    header = table.splitlines()[0]
    assert "--mixstyle_p" in header  # the flag they differ in
    assert "--seed" not in header and "--num_workers" not in header and "--lr" not in header
    rows = table_rows(table)
    assert len(rows) == 2
    assert "aaaa1111 (seed 1)" in rows[0] and "| 50.00 |" in rows[0] and "| 60.00 |" in rows[0]  # macro, real
    assert rows[0].rstrip(" |").endswith("0.4") and rows[1].rstrip(" |").endswith("0.0")
    assert "bbbb2222 (seed 2)" in rows[1] and "| 42.00 |" in rows[1]
    assert (tmp_path / "cmp.md").read_text().count("aaaa1111") == 1
    width, height = png_size(tmp_path / "cmp.png")
    assert width >= 800 and height == 650


def test_compare_puts_a_seed_sweep_into_one_row_with_mean_and_std(tmp_path):
    project = tmp_path / "P"
    finished_run(project, "seed1run", 0.50, {"seed": 1})
    finished_run(project, "seed2run", 0.54, {"seed": 2})
    finished_run(project, "seed3run", 0.49, {"seed": 3})
    finished_run(project, "widerrun", 0.60, {"seed": 1, "base_channels": 40})
    table = compare(["seed1run", "seed2run", "widerrun", "seed3run"], project_name=str(project),
                    out=str(tmp_path / "cmp"))
    rows = table_rows(table)
    assert len(rows) == 2
    sweep = rows[0]
    assert "seed1run (seed 1), seed2run (seed 2), seed3run (seed 3)" in sweep and "| 3 |" in sweep
    std = math.sqrt(((50 - 51) ** 2 + (54 - 51) ** 2 + (49 - 51) ** 2) / 2)  # sample standard deviation
    assert f"| 51.00 ± {std:.2f} |" in sweep
    assert "widerrun (seed 1)" in rows[1] and "| 60.00 |" in rows[1] and "| 1 |" in rows[1]
    assert "--base_channels" in table.splitlines()[0]


def test_compare_groups_stage2_runs_by_the_flags_of_their_stage1_runs(tmp_path):
    project = tmp_path / "P"
    first = finished_run(project, "base0001", 0.40, {"seed": 1})
    second = finished_run(project, "base0002", 0.44, {"seed": 2})
    other = finished_run(project, "base0003", 0.30, {"seed": 1, "mixstyle_p": 0.0})
    stage2 = {"lr": 5e-4, "mixstyle_p": 0.0}
    finished_run(project, "dev00001", 0.50, {**stage2, "ckpt_id": "base0001"}, stage1_dir=first)
    finished_run(project, "dev00002", 0.52, {**stage2, "ckpt_id": "base0002"}, stage1_dir=second)
    finished_run(project, "dev00003", 0.45, {**stage2, "ckpt_id": "base0003"}, stage1_dir=other)
    table = compare(["dev00001", "dev00002", "dev00003"], project_name=str(project), out=str(tmp_path / "cmp"))
    rows = table_rows(table)
    assert len(rows) == 4  # two groups, each with the general model and the device-specific system
    assert "dev00001 (stage 1: base0001, seed 1), dev00002 (stage 1: base0002, seed 2)" in rows[0]
    assert "| Device-specific Models | 2 | 53.00 ± 1.41 |" in rows[1]
    assert "--stage1.mixstyle_p" in table.splitlines()[0] and "--ckpt_id" not in table


def test_compare_leaves_files_it_did_not_write_alone(tmp_path):
    project = tmp_path / "P"
    finished_run(project, "aaaa1111", 0.5, {})
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    # the command's main, in this process (test_end_to_end runs ``python -m helpers.compare_runs`` as a user does)
    with pytest.raises(SystemExit, match="notes.md exists"):
        compare_command.main([str(project / "aaaa1111"), "--out", str(tmp_path / "notes")])
    assert mine.read_text() == "my notes\n" and not (tmp_path / "notes.png").exists()
    with pytest.raises(SystemExit, match="aaaa1111"):  # lists the runs there
        compare_command.main(["nosuchrun", "--project_name", str(project)])
    again = compare([str(project / "aaaa1111")], out=str(tmp_path / "cmp"))  # its own output is replaced
    assert compare([str(project / "aaaa1111")], out=str(tmp_path / "cmp")) == again
    # an output of the command under its earlier name (helpers.compare) is its own too
    (tmp_path / "old.md").write_text("<!-- written by python -m helpers.compare -->\n# Comparison of 1 runs\n")
    assert compare([str(project / "aaaa1111")], out=str(tmp_path / "old")) == again


def test_a_whole_run_id_is_found_even_when_it_starts_other_ids(tmp_path):
    from helpers.outputs.results import find_run_dir
    for run_id in ("t_wide", "t_wide36", "t_wide_dev"):
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "results.json").write_text("{}")
    assert find_run_dir("t_wide", str(tmp_path)) == tmp_path / "t_wide"
    assert find_run_dir("t_wide3", str(tmp_path)) == tmp_path / "t_wide36"  # the start of an id still works
    with pytest.raises(FileNotFoundError, match="matches several runs"):
        find_run_dir("t_w", str(tmp_path))
