"""Runs side by side: one row per run and system (runs that differ only in their seed share a row, mean
± sample standard deviation), the macro-average, the device groups, every device, and the flags in
which the runs differ; written as a Markdown table and a bar chart. The command: ``helpers/compare_runs.py``.
A stage-2 run counts with the flags of the stage-1 run it was fine-tuned from (as ``stage1.<flag>``)."""
import statistics
from pathlib import Path

import numpy as np

from dataset.dcase25 import DEVICES
from helpers.files import atomic_path, write_text
from helpers.outputs.drawing import new_figure
from helpers.outputs.results import find_run_dir, read_results
from helpers.setup.checkpoints import hyper_parameters, load_checkpoint

# flags that do not change what a run learns (or that are compared another way: seed, ckpt_id)
RUN_SPECIFIC = {"run_id", "resume", "seed", "experiment_name", "project_name", "wandb_mode", "wandb_init_timeout",
                "num_workers",
                "cache_dir", "ckpt_id", "merge", "evaluate", "eval_dir", "overwrite"}
GROUPS = ("real", "seen", "unseen")
MARKER = "<!-- written by python -m helpers.compare_runs -->"
EARLIER_MARKERS = ("<!-- written by python -m helpers.compare -->",)  # the command's earlier name: also ours


def run_flags(run_dir: Path, results: dict) -> dict:
    """The run's flags: from ``results.json``, else from its checkpoint's hyper-parameters."""
    if "flags" in results:
        return dict(results["flags"])
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        return hyper_parameters(load_checkpoint(ckpt))
    return {}


def load_run(run_or_folder: str, project_name: str) -> dict:
    """A run's id, folder, results per system, and the flags that define it (``stage1.*`` for stage 2)."""
    run_dir = find_run_dir(run_or_folder, project_name)
    results = read_results(run_dir)
    flags = run_flags(run_dir, results)
    general, stage1_run = results.get("general_checkpoint"), None
    if general:  # stage 2: the general model it started from counts by its own flags, not by its id
        # the path was written relative to where stage 2 ran; else look for the run beside this one
        parents = Path(general).parents  # <project>/<run id>/checkpoints/last.ckpt, or any .ckpt file
        candidates = [parents[1], run_dir.parent / parents[1].name] if len(parents) > 1 else []
        stage1_dir = next((d for d in candidates if (d / "results.json").is_file()), None)
        if stage1_dir is not None:
            stage1 = run_flags(stage1_dir, read_results(stage1_dir))
            flags.update({f"stage1.{k}": v for k, v in stage1.items() if k not in RUN_SPECIFIC})
            flags["stage1.seed"] = stage1.get("seed")
            stage1_run = stage1_dir.name
        else:
            flags["stage1.checkpoint"] = general
    return {"run_id": results.get("run_id", run_dir.name), "dir": run_dir, "systems": results["results"],
            "flags": flags, "seed": flags.get("seed"), "stage1_run": stage1_run,
            "stage1_seed": flags.get("stage1.seed")}


def defining_flags(run: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in run["flags"].items()
                        if k not in RUN_SPECIFIC and k != "stage1.seed"))


def group_runs(runs: list) -> list:
    """Lists of runs that differ only in run-specific flags (a seed sweep), in order of first appearance."""
    groups = {}
    for run in runs:
        groups.setdefault((tuple(run["systems"]), defining_flags(run)), []).append(run)
    return list(groups.values())


def differing_flags(runs: list) -> list:
    """Flags whose value is not the same in all runs that have them (run-specific ones left out); a flag
    of one stage only (``--train_devices``, ``stage1.*``) shows when the runs of that stage differ in it."""
    names = sorted({k for run in runs for k in run["flags"]} - RUN_SPECIFIC - {"stage1.seed"})

    def differs(flag):
        stages = {tuple(run["systems"]) for run in runs if flag in run["flags"]}
        # a run of such a stage that lacks the flag (an older run) counts as a different value
        return len({repr(run["flags"].get(flag)) for run in runs if tuple(run["systems"]) in stages}) > 1

    return [k for k in names if differs(k)]


def summary(values: list):
    """(mean, sample standard deviation or None) of accuracies in percent."""
    values = [100 * v for v in values]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def cell(values: list) -> str:
    if not values:
        return "-"
    mean, std = summary(values)
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _runs_cell(group: list) -> str:
    def one(run):
        notes = [f"seed {run['seed']}"] if run["seed"] is not None else []
        if run["stage1_run"]:  # a stage-2 run: the stage-1 run it started from, and that run's seed
            seed = f", seed {run['stage1_seed']}" if run["stage1_seed"] is not None else ""
            notes.append(f"stage 1: {run['stage1_run']}{seed}")
        return run["run_id"] + (f" ({'; '.join(notes)})" if notes else "")
    return ", ".join(one(run) for run in group)


def comparison_rows(runs: list) -> tuple:
    """``(rows, flags)``: one row per group of runs and system, with the values of ``flags`` (those that differ)."""
    flags = differing_flags(runs)
    rows = []
    for group in group_runs(runs):
        for system in group[0]["systems"]:
            metrics = [run["systems"][system] for run in group]
            values = {key: [m[f"acc.{key}"] for m in metrics if f"acc.{key}" in m] for key in GROUPS + tuple(DEVICES)}
            values["macro"] = [m["macro_avg_acc"] for m in metrics]
            rows.append({"number": len(rows) + 1, "runs": _runs_cell(group), "n": len(group), "system": system,
                         "values": values,
                         "flags": {k: (str(group[0]["flags"][k]) if k in group[0]["flags"] else "-") for k in flags}})
    return rows, flags


def comparison_markdown(rows: list, flags: list) -> str:
    header = (["#", "Runs", "System", "n", "Macro Avg. Accuracy"] + [g.title() for g in GROUPS]
              + [d.upper() for d in DEVICES] + [f"--{k}" for k in flags])
    alignment = ["---:", "---", "---", "---:"] + ["---:"] * (4 + len(DEVICES)) + ["---"] * len(flags)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(alignment) + "|"]
    for row in rows:
        cells = ([str(row["number"]), row["runs"], row["system"], str(row["n"]), cell(row["values"]["macro"])]
                 + [cell(row["values"][k]) for k in GROUPS + tuple(DEVICES)] + [row["flags"][k] for k in flags])
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    note = ("Accuracies in percent on the development-test split; `mean ± std` over the n runs of a row "
            "(sample standard deviation), runs that differ only in their seed.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def comparison_chart(rows: list, flags: list, n_runs: int):
    """Grouped bars: macro-average and the three device groups, one bar per row, error bars = std."""
    categories = ["macro average"] + list(GROUPS)
    keys = ["macro"] + list(GROUPS)
    figure = new_figure((min(14.0, max(8.0, 3 + 0.35 * len(rows) * len(categories))), 6.5))
    ax = figure.add_subplot()
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        stats = [summary(row["values"][k]) if row["values"][k] else (np.nan, None) for k in keys]
        positions = np.arange(len(keys)) + (i - (len(rows) - 1) / 2) * width
        settings = ", ".join(f"{k}={row['flags'][k]}" for k in flags)
        label = f"#{row['number']} {row['system']} ({row['n']} run{'s' if row['n'] > 1 else ''})"
        if settings:
            label += f": {settings if len(settings) <= 70 else settings[:67] + '...'}"
        errors = [s for _, s in stats] if row["n"] > 1 else None
        bars = ax.bar(positions, [m for m, _ in stats], width, yerr=errors, capsize=3, label=label)
        ax.bar_label(bars, labels=[f"{m:.1f}" for m, _ in stats], fontsize=8, padding=2)
    ax.set_xticks(range(len(keys)), categories)
    ax.set_ylabel("accuracy (%), mean ± std over the runs of a row")
    ax.set_ylim(0, 100)
    ax.set_title(f"Macro-average and device-group accuracy of {n_runs} run{'s' if n_runs > 1 else ''} "
                 "(rows of the comparison table)", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.08), fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return figure


def check_writable(path: Path, md_path: Path) -> None:
    """Replace only this command's own earlier outputs, never a file someone else wrote."""
    ours = md_path.is_file() and md_path.read_text().startswith((MARKER, *EARLIER_MARKERS))
    if path.exists() and not ours:
        raise FileExistsError(f"{path} exists and was not written by helpers.compare_runs; choose another --out.")


def compare(run_ids, project_name="DCASE25_Task1", out="comparison") -> str:
    """Compare the runs; write ``<out>.md`` and ``<out>.png``; return the table."""
    runs, seen = [], set()
    for run_or_folder in run_ids:
        run = load_run(run_or_folder, project_name)
        if run["dir"].resolve() not in seen:
            seen.add(run["dir"].resolve())
            runs.append(run)
    rows, flags = comparison_rows(runs)
    table = comparison_markdown(rows, flags)
    md_path, png_path = Path(f"{out}.md"), Path(f"{out}.png")
    for path in (md_path, png_path):
        check_writable(path, md_path)
    with atomic_path(png_path) as tmp:
        comparison_chart(rows, flags, len(runs)).savefig(tmp, format="png")
    write_text(md_path, f"{MARKER}\n# Comparison of {len(runs)} runs\n\n{table}\n![accuracy chart]({png_path.name})\n")
    return table
