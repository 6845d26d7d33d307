"""Result tables in the layout of the organisers' README (accuracies in percent), result figures and result files."""
import json
from pathlib import Path

from dataset.dcase25 import CLASSES, DEVICE_GROUPS, DEVICES
from helpers.files import atomic_path, write_json, write_text
from helpers.outputs.complexity import complexity_markdown

GENERAL, DEVICE_SPECIFIC = "General Model", "Device-specific Models"


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


def write_figures(out_dir, run_id: str, confusion: dict) -> list:
    """Draw the figures of a final test from its confusion counts (``{system: {device: matrix}}``) into
    ``out_dir``: per system a confusion matrix and a class x device accuracy map, and for a stage-2 run
    the map of the device-specific system minus the general model. Returns the PNG paths."""
    from helpers.outputs.drawing import result_figures  # matplotlib is imported only when figures are drawn
    difference = (DEVICE_SPECIFIC, GENERAL) if {DEVICE_SPECIFIC, GENERAL} <= confusion.keys() else None
    figures = result_figures(f"run {run_id}", confusion, CLASSES, DEVICES, DEVICE_GROUPS, difference)
    paths = []
    for name, figure in figures.items():
        with atomic_path(Path(out_dir) / name) as tmp:
            figure.savefig(tmp, format="png")
        paths.append(Path(out_dir) / name)
    return paths


def log_figures(logger, paths) -> None:
    """Log the figures as images under ``test/<name>`` (wandb, online or offline); loggers that take no
    images (CSV) keep them only as files."""
    if logger is None or not hasattr(logger, "log_image"):
        return
    for path in paths:
        logger.log_image(key=f"test/{Path(path).stem}", images=[str(path)])


def write_results(run_dir, run_id: str, systems: dict, complexity: dict, confusion: dict = None, flags: dict = None,
                  logger=None, **extra) -> str:
    """Write ``results.json``, the figures and ``results.md`` (which shows them) into the run's folder, log
    the figures to ``logger``; return the tables.

    ``confusion`` maps each system to the confusion counts of its final test
    (``SceneDeviceAccuracy.confusion_counts()``); ``flags`` are the run's flags, for ``helpers.compare_runs``."""
    run_dir = Path(run_dir)
    data = {"run_id": run_id, "results": systems, "complexity": complexity, **extra}
    if flags is not None:
        data["flags"] = dict(flags)
    if confusion:
        data["confusion"] = {"rows": "true class", "columns": "predicted class", "classes": list(CLASSES),
                             "systems": confusion}
    write_json(run_dir / "results.json", data)
    figures = write_figures(run_dir, run_id, confusion) if confusion else []
    tables = results_markdown(systems)
    shown = "".join(f"![{path.stem.replace('_', ' ')}]({path.name})\n\n" for path in figures)
    write_text(run_dir / "results.md", f"# Results of run {run_id}\n\n{tables}\n### Complexity\n\n"
               + complexity_markdown(complexity) + "\n" + (f"\n### Figures\n\n{shown}" if shown else ""))
    log_figures(logger, figures)
    return tables


def find_run_dir(run_or_folder: str, project_name: str = "DCASE25_Task1") -> Path:
    """The folder holding a run's ``results.json``: a folder (or the file itself), or a run id (its first
    characters are enough) under ``project_name``."""
    path = Path(run_or_folder).expanduser()
    if path.is_file() and path.name == "results.json":
        return path.parent
    if (path / "results.json").is_file():
        return path
    if path.is_dir():
        raise FileNotFoundError(f"{path} holds no results.json: the run has not finished its final test.")
    if (Path(project_name) / run_or_folder / "results.json").is_file():  # a whole id, even if it starts others
        return Path(project_name) / run_or_folder
    runs = sorted(p.parent for p in Path(project_name).glob("*/results.json"))
    matches = [run for run in runs if run.name.startswith(run_or_folder)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise FileNotFoundError(f"{run_or_folder} matches several runs under {project_name}/: "
                                f"{', '.join(r.name for r in matches)}. Give more of the run id.")
    listing = ", ".join(r.name for r in runs) or "none"
    raise FileNotFoundError(f"{run_or_folder} is neither a run folder with results.json nor the id of a finished "
                            f"run under {project_name}/ (finished runs there: {listing}). Pass a run id with "
                            "--project_name, or the run's folder.")


def read_results(run_dir) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())
