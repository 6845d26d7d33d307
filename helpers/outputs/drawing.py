"""Result figures of a final test: confusion matrices and class x device accuracy maps.

Everything is drawn from confusion counts, ``{device: matrix}`` with rows the true class and columns
the predicted class, so figures can be redrawn from ``results.json`` without the audio. The module
imports nothing from the project: the exported submission package carries a copy of it for its
``evaluate_submission.py``. Figures are made with matplotlib's Agg canvas and no pyplot, so they need
no display and leave a user's pyplot state alone.
"""
import re

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
CONFUSION_SIZE = (9.5, 8.5)  # inches; at DPI 100: 950 x 850 pixels
MAP_SIZE = (10.5, 7.5)


def slug(name: str) -> str:
    """A file-name part for a system name: ``Device-specific Models`` -> ``device_specific_models``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _label(name: str) -> str:
    return name.replace("_", " ")


def new_figure(size) -> Figure:
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _stack(confusion: dict, devices) -> np.ndarray:
    """``[device, true, predicted]`` counts in the order of ``devices`` (zeros where a device has none)."""
    n_classes = len(next(iter(confusion.values())))
    empty = np.zeros((n_classes, n_classes))
    return np.stack([np.asarray(confusion.get(d, empty), dtype=float) for d in devices])


def _ratio(numerator, denominator):
    """``numerator / denominator`` elementwise, NaN where the denominator is 0."""
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    return np.divide(numerator, denominator, out=np.full(numerator.shape, np.nan), where=denominator > 0)


def map_devices(confusion: dict, devices) -> list:
    """The columns of an accuracy map: ``devices``, then any other device that has clips (``unknown``)."""
    return list(devices) + [d for d in confusion if d not in devices]


def class_device_accuracy(confusion: dict, devices) -> np.ndarray:
    """Accuracy ``[class, device]`` as fractions, NaN where a cell has no clips."""
    counts = _stack(confusion, devices)
    return _ratio(counts.diagonal(axis1=1, axis2=2), counts.sum(axis=2)).T


def _text_colour(value, vmin, vmax, cmap_name):
    """Black or white, whichever reads better on the cell's colour."""
    from matplotlib import colormaps
    if np.isnan(value):
        return "black"
    red, green, blue, _ = colormaps[cmap_name]((value - vmin) / (vmax - vmin))
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.55 else "white"


def confusion_figure(confusion: dict, classes, title: str) -> Figure:
    """The confusion matrix over all devices: colours row-normalised (the share of each true class's
    clips), each cell labelled with that share in percent and the clip count."""
    counts = _stack(confusion, list(confusion)).sum(axis=0)
    totals = counts.sum(axis=1)
    shares = np.nan_to_num(_ratio(counts, totals[:, None]))
    accuracy = counts.trace() / counts.sum()
    macro = np.nanmean(_ratio(counts.diagonal(), totals))
    figure = new_figure(CONFUSION_SIZE)
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j] or i == j:
                ax.text(j, i, f"{100 * shares[i, j]:.0f}%\n{int(counts[i, j])}", ha="center", va="center",
                        fontsize=8, color=_text_colour(shares[i, j], 0, 1, "Blues"), in_layout=False)
    ax.set_xticks(range(len(classes)), [_label(c) for c in classes], rotation=40, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(range(len(classes)), [f"{_label(c)} ({int(n)})" for c, n in zip(classes, totals)])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (clips)")
    ax.set_title(f"{title}\nconfusion matrix, {int(counts.sum())} clips: accuracy {100 * accuracy:.1f} %, "
                 f"macro-average {100 * macro:.1f} %", fontsize=11)
    bar = figure.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("share of the true class's clips (rows sum to 1); cells: percent, clips")
    return figure


def _mark_device_groups(ax, devices, device_groups):
    """Lines between device groups and the group names above the columns."""
    groups = [device_groups.get(d, "other") for d in devices]
    starts = [i for i in range(len(devices)) if i == 0 or groups[i] != groups[i - 1]]
    for start in starts[1:]:
        ax.axvline(start - 0.5, color="black", linewidth=2.5)
    ends = starts[1:] + [len(devices)]
    top = ax.secondary_xaxis("top")
    top.set_xticks([(s + e - 1) / 2 for s, e in zip(starts, ends)], [groups[s] for s in starts], fontsize=11,
                   fontweight="bold")
    top.tick_params(length=0)


def _map_figure(values, classes, devices, device_groups, title, row_margin, column_margin, cmap, vmin, vmax,
                cell_format, bar_label) -> Figure:
    figure = new_figure(MAP_SIZE)
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_facecolor("0.85")  # cells without clips
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            value = values[i, j]
            ax.text(j, i, "-" if np.isnan(value) else cell_format.format(value), ha="center", va="center",
                    fontsize=9, color=_text_colour(value, vmin, vmax, cmap), in_layout=False)

    def tick(name, margin, separator):
        return name if np.isnan(margin) else f"{name}{separator}{cell_format.format(margin)}"

    ax.set_xticks(range(len(devices)), [tick(d.upper(), m, "\n") for d, m in zip(devices, column_margin)])
    ax.set_yticks(range(len(classes)), [tick(_label(c), m, "  ") for c, m in zip(classes, row_margin)])
    ax.set_xlabel("device (under each: over all its clips)")
    ax.set_ylabel("true class (beside each: over all its clips)")
    _mark_device_groups(ax, devices, device_groups)
    ax.set_title(title, fontsize=11)
    figure.colorbar(image, ax=ax, shrink=0.8).set_label(bar_label)
    return figure


def _margins(confusion: dict, devices):
    """Class-wise and device-wise accuracy (fractions) over all clips of the class or the device."""
    counts = _stack(confusion, devices)
    correct = counts.diagonal(axis1=1, axis2=2)  # [device, class]
    return _ratio(correct.sum(axis=0), counts.sum(axis=(0, 2))), _ratio(correct.sum(axis=1), counts.sum(axis=(1, 2)))


def accuracy_map_figure(confusion: dict, classes, devices, device_groups: dict, title: str) -> Figure:
    """Accuracy in percent of every (class, device) cell; ``device_groups`` maps a device to its group."""
    devices = map_devices(confusion, devices)
    per_class, per_device = _margins(confusion, devices)
    macro = np.nanmean(per_class)
    return _map_figure(100 * class_device_accuracy(confusion, devices), classes, devices, device_groups,
                       f"{title}\naccuracy (%) per class and device, macro-average {100 * macro:.1f} %",
                       100 * per_class, 100 * per_device, "viridis", 0, 100, "{:.1f}", "accuracy (%)")


def difference_map_figure(confusion: dict, baseline: dict, classes, devices, device_groups: dict,
                          title: str) -> Figure:
    """Accuracy of ``confusion`` minus that of ``baseline`` per (class, device), in percentage points."""
    devices = map_devices({**baseline, **confusion}, devices)
    difference = 100 * (class_device_accuracy(confusion, devices) - class_device_accuracy(baseline, devices))
    class_a, device_a = _margins(confusion, devices)
    class_b, device_b = _margins(baseline, devices)
    macro = 100 * (np.nanmean(class_a) - np.nanmean(class_b))
    limit = max(1.0, float(np.ceil(np.nanmax(np.abs(difference), initial=0.0))))
    return _map_figure(difference, classes, devices, device_groups,
                       f"{title}\naccuracy difference (percentage points) per class and device, "
                       f"macro-average {macro:+.1f}", 100 * (class_a - class_b), 100 * (device_a - device_b),
                       "RdBu", -limit, limit, "{:+.1f}", "difference (percentage points): blue better, red worse")


def result_figures(run_label: str, confusion: dict, classes, devices, device_groups: dict,
                   difference=None) -> dict:
    """``{file name: Figure}`` for a final test: a confusion matrix and an accuracy map per system of
    ``confusion`` (``{system: {device: matrix}}``), and with ``difference=(system, baseline)`` the map of
    their difference. Titles name ``run_label`` and the system."""
    figures = {}
    for system, matrices in confusion.items():
        figures[f"confusion_{slug(system)}.png"] = confusion_figure(matrices, classes, f"{run_label} · {system}")
        figures[f"accuracy_map_{slug(system)}.png"] = accuracy_map_figure(
            matrices, classes, devices, device_groups, f"{run_label} · {system}")
    if difference is not None:
        system, baseline = difference
        figures["accuracy_map_difference.png"] = difference_map_figure(
            confusion[system], confusion[baseline], classes, devices, device_groups,
            f"{run_label} · {system} minus {baseline}")
    return figures
