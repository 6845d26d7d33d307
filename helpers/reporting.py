"""Result tables in the layout of the organisers' README (accuracies in percent) and result files."""
from pathlib import Path

from dataset.dcase25 import CLASSES, DEVICES
from helpers.complexity import complexity_markdown
from helpers.files import write_json, write_text


def _title(name: str) -> str:
    return name.replace("_", " ").title()


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(first_column: str, keys, headers, systems: dict) -> str:
    lines = [_row([first_column] + headers + ["Macro Avg. Accuracy"]),
             _row(["---"] + ["---:"] * (len(headers) + 1))]
    for system, results in systems.items():
        cells = [f"{100 * results[f'acc.{key}']:.2f}" if f"acc.{key}" in results else "-" for key in keys]
        lines.append(_row([system] + cells + [f"{100 * results['macro_avg_acc']:.2f}"]))
    return "\n".join(lines)


def class_table(systems: dict) -> str:
    """``systems`` maps a row name to the results of ``SceneDeviceAccuracy.compute()``."""
    return _table("Model", CLASSES, [_title(c) for c in CLASSES], systems)


def device_table(systems: dict) -> str:
    return _table("Model", DEVICES, [d.upper() for d in DEVICES], systems)


def results_markdown(systems: dict) -> str:
    return ("### Class-wise results\n\n" + class_table(systems)
            + "\n\n### Device-wise results\n\n" + device_table(systems) + "\n")


def write_results(run_dir, run_id: str, systems: dict, complexity: dict, **extra) -> str:
    """Write ``results.md`` and ``results.json`` into the run's folder; return the tables."""
    tables = results_markdown(systems)
    write_text(Path(run_dir) / "results.md", f"# Results of run {run_id}\n\n{tables}\n### Complexity\n\n"
               + complexity_markdown(complexity) + "\n")
    write_json(Path(run_dir) / "results.json", {"run_id": run_id, "results": systems,
                                                "complexity": complexity, **extra})
    return tables
