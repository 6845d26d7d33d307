"""Evaluation-set predictions in the 2025 layout: reading the set, running it, writing the files."""
from pathlib import Path

import pandas as pd
import torch

from dataset import validation
from dataset.dcase25 import CLASSES, DataError
from helpers.files import atomic_path

EVAL_SPLIT = Path("evaluation_setup") / "fold1_test.csv"
DEVICE_COLUMNS = ("device_id", "source_label")


def evaluation_rows(eval_dir) -> pd.DataFrame:
    """``fold1_test.csv`` of an evaluation set, checked, with the device in a column ``device_id``."""
    path = Path(eval_dir) / EVAL_SPLIT
    if not path.is_file():
        raise DataError(f"{path} not found: --eval_dir must point to the evaluation set, the folder that "
                        f"holds audio/ and {EVAL_SPLIT}.")
    rows = validation.read_table(path)
    column = next((c for c in DEVICE_COLUMNS if c in rows.columns), "device_id")
    validation.check_columns(rows, path, ("filename", column),
                             "It needs the columns filename and device_id (or source_label).")
    validation.check_evaluation_table(rows, path, column)
    return rows.rename(columns={column: "device_id"})[["filename", "device_id"]].reset_index(drop=True)


@torch.no_grad()
def predict_logits(module, loader) -> torch.Tensor:
    """Logits for every clip of ``loader`` in order, through ``module.inference_logits``."""
    device = next(module.parameters()).device
    outputs = [module.inference_logits(waveform.to(device), devices).float().cpu()
               for waveform, _, devices, _ in loader]
    return torch.cat(outputs)


def predictions_table(filenames, logits: torch.Tensor) -> pd.DataFrame:
    """``filename``, ``scene_label`` (the arg-max class), then one softmax probability per class."""
    probabilities = logits.float().softmax(dim=1)
    table = pd.DataFrame({"filename": list(filenames),
                          "scene_label": [CLASSES[i] for i in probabilities.argmax(dim=1).tolist()]})
    for i, label in enumerate(CLASSES):
        table[label] = probabilities[:, i].numpy()
    return table


def write_predictions_csv(path, table: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return Path(path)
