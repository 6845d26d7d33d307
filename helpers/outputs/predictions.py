"""Evaluation-set predictions (``train_device_specific.py --evaluate``): reading the set in the 2025
layout, running a device system on it, and writing ``predictions/<run id>/``."""
import json
from pathlib import Path

import pandas as pd
import torch

from dataset import validation
from dataset.dcase25 import CLASSES, DataError
from helpers.files import atomic_path, write_json
from helpers.outputs.complexity import complexity_markdown, device_models_complexity, over_limits
from helpers.setup.checkpoints import run_of_checkpoint, save_checkpoint
from helpers.setup.data import check_audio, make_loader, trains_on_cpu
from helpers.setup.device_system import load_device_system
from helpers.setup.network_flags import set_network_flags
from helpers.training.builder import build_module
from models.inference import store_for_submission
from models.registry import network_record

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


def evaluation_device(args) -> torch.device:
    """Where ``--evaluate`` computes: where training would (``--accelerator``), the CPU without a CUDA GPU."""
    return torch.device("cpu" if trains_on_cpu(args) or not torch.cuda.is_available() else "cuda")


def evaluate(args) -> Path:
    """Predict the evaluation set with a stage-2 system and write ``predictions/<run id>/`` (for a checkpoint
    file outside a run folder: ``predictions/<file name without .ckpt>/``): ``output.csv``, ``info.json``
    and ``model_state_dict.pt``. Refused, writing nothing, when a model exceeds the limits."""
    if not args.eval_dir:
        raise SystemExit("--evaluate needs --eval_dir DIR, the evaluation set (audio/ and evaluation_setup/).")
    system, _, ckpt_path = load_device_system(args.ckpt_id, args.project_name, args)
    set_network_flags(args, network_record(system))
    run_id = run_of_checkpoint(ckpt_path)
    out_dir = Path("predictions") / (run_id or ckpt_path.stem)
    if out_dir.exists() and not args.overwrite:
        raise SystemExit(f"{out_dir}/ exists already; pass --overwrite to replace its files.")

    module = build_module(vars(args), model=system).eval()
    complexity = device_models_complexity(system, module.frontend.input_shape())
    print(complexity_markdown(complexity))
    too_big = over_limits(complexity)
    if too_big:
        raise SystemExit(f"Refusing to write predictions: {', '.join(too_big)} exceed the complexity limits.")

    # each device's files are predicted together in full batches, then put back in the csv's order
    rows = evaluation_rows(args.eval_dir)
    check_audio(args, args.eval_dir, rows)
    by_device = rows.sort_values("device_id", kind="stable")
    # int8 for an 8-bit system, else 16-bit: the stored parameters, in the arithmetic of the final test
    store_for_submission(system)
    module.to(evaluation_device(args))
    loader = make_loader(args.eval_dir, by_device, args, False, device_column="device_id")
    sorted_logits = predict_logits(module, loader)
    logits = torch.empty_like(sorted_logits)
    logits[torch.tensor(by_device.index.tolist())] = sorted_logits

    results_file = ckpt_path.parents[1] / "results.json" if run_id else None
    test_results = json.loads(results_file.read_text())["results"] if results_file and results_file.is_file() else None
    out_csv = write_predictions_csv(out_dir / "output.csv", predictions_table(rows["filename"], logits))
    network = network_record(system)
    write_json(out_dir / "info.json", {"run_id": run_id, "checkpoint": str(ckpt_path), "network": network,
                                       "complexity": complexity, "test_results": test_results})
    state = system.cpu().half().state_dict()
    save_checkpoint({"state_dict": state, "network": network}, out_dir / "model_state_dict.pt")
    print(f"Predictions for {len(rows)} files: {out_csv.resolve()}")
    return out_csv
