"""Evaluation of a submission module, before submitting:

    python evaluate_submission.py --submission_name Lastname_INST_task1 --submission_index 1 \
        --dev_set_dir /path/to/TAU-urban-acoustic-scenes-2022-mobile-development \
        --eval_set_dir /path/to/TAU-urban-acoustic-scenes-2025-mobile-evaluation

Predicts the development-test split and prints its accuracies (overall, macro-average, per class,
per device and device group) as a sanity check, then predicts the evaluation set and writes to
``predictions/<label>_<index>/``: ``output.csv`` (the file to submit), ``test_accuracy.json`` (with
the confusion counts per device), ``complexity.json`` and ``model_state_dict.pt``, and, when
matplotlib is installed, the figures of the development-test split: ``confusion_submission.png``
and ``accuracy_map_submission.png``. Exits with status 1 when a model exceeds the complexity limits.
"""
import argparse
import os
import sys
import urllib.error
import urllib.request
from importlib import resources

import pandas as pd
import torch

from test_complexity import complexity_report, import_submission, parse_flags, print_report, write_json

SPLIT_URL = "https://github.com/CPJKU/dcase2024_task1_baseline/releases/download/files/test.csv"
DEVICE_GROUPS = {"real": ["a", "b", "c"], "seen": ["s1", "s2", "s3"], "unseen": ["s4", "s5", "s6"]}
EVAL_SPLIT = os.path.join("evaluation_setup", "fold1_test.csv")


def find_test_split(args, package: str) -> str:
    """The development-test split: --test_split_csv, the packaged copy, <dev_set_dir>/split_setup/test.csv,
    or ./split_setup/test.csv (downloaded there from the organisers' release if missing)."""
    if args.test_split_csv:
        return args.test_split_csv
    packaged = resources.files(f"{package}.resources") / "test.csv"
    if packaged.is_file():
        with resources.as_file(packaged) as path:
            return str(path)
    for path in (os.path.join(args.dev_set_dir, "split_setup", "test.csv"), os.path.join("split_setup", "test.csv")):
        if os.path.isfile(path):
            return path
    target = os.path.join("split_setup", "test.csv")
    print(f"test.csv is not packaged; downloading it from {SPLIT_URL} to {target}")
    os.makedirs("split_setup", exist_ok=True)
    try:
        urllib.request.urlretrieve(SPLIT_URL, target + ".part")
    except (urllib.error.URLError, OSError) as err:
        raise SystemExit(f"The development-test split is not packaged and could not be downloaded from "
                         f"{SPLIT_URL} ({err}). Download it elsewhere and pass --test_split_csv PATH, or put it "
                         f"into {target}.") from err
    os.replace(target + ".part", target)
    return target


def read_tsv(path: str) -> pd.DataFrame:
    if not os.path.isfile(path):
        raise SystemExit(f"{path} not found.")
    return pd.read_csv(path, sep="\t")


def test_rows(args, package: str) -> pd.DataFrame:
    split_path = find_test_split(args, package)
    meta = read_tsv(os.path.join(args.dev_set_dir, "meta.csv"))
    split = read_tsv(split_path)[["filename"]]
    rows = split.merge(meta, on="filename", how="inner")
    if rows.empty:
        raise SystemExit(f"None of the files of {split_path} is listed in {args.dev_set_dir}/meta.csv: "
                         "--dev_set_dir must be the development set (meta.csv and audio/).")
    if len(rows) < len(split):
        print(f"Warning: {len(split) - len(rows)} files of {split_path} are not in meta.csv and are skipped.")
    return rows


def eval_rows(eval_set_dir: str) -> pd.DataFrame:
    rows = read_tsv(os.path.join(eval_set_dir, EVAL_SPLIT))
    column = next((c for c in ("device_id", "source_label") if c in rows.columns), None)
    if "filename" not in rows.columns or column is None:
        raise SystemExit(f"{os.path.join(eval_set_dir, EVAL_SPLIT)} needs the columns filename and device_id "
                         f"(or source_label); it has {', '.join(rows.columns)}.")
    return rows.rename(columns={column: "device_id"})[["filename", "device_id"]]


def accuracies(true_labels, predicted, devices, classes) -> dict:
    """Overall, macro-average (mean of the class accuracies), per class, per device and device group."""
    frame = pd.DataFrame({"label": true_labels, "predicted": predicted, "device": devices})
    frame["correct"] = frame["label"] == frame["predicted"]
    per_class = {c: float(frame.loc[frame["label"] == c, "correct"].mean()) for c in classes
                 if (frame["label"] == c).any()}
    per_device = {d: float(g["correct"].mean()) for d, g in frame.groupby("device", sort=True)}
    per_group = {name: float(frame.loc[frame["device"].isin(members), "correct"].mean())
                 for name, members in DEVICE_GROUPS.items() if frame["device"].isin(members).any()}
    return {"overall": float(frame["correct"].mean()), "macro_average": sum(per_class.values()) / len(per_class),
            "per_class": per_class, "per_device": per_device, "per_device_group": per_group,
            "n_files": len(frame)}


def confusion_counts(true_labels, predicted, devices, classes) -> dict:
    """``{device: matrix}``: clip counts, rows the true class and columns the predicted class."""
    index = {c: i for i, c in enumerate(classes)}
    counts = {}
    for label, guess, device in zip(true_labels, predicted, devices):
        matrix = counts.setdefault(device, [[0] * len(classes) for _ in classes])
        matrix[index[label]][index[guess]] += 1
    return dict(sorted(counts.items()))


def write_figures(out_dir: str, api, title: str, confusion: dict, classes) -> list:
    """The confusion matrix and the class x device accuracy map as PNG files (drawn by the package's
    copy of the training system's plotting module); skipped with one line without matplotlib."""
    device_groups = {device: group for group, members in DEVICE_GROUPS.items() for device in members}
    try:
        figures = api.result_figures(title, {"Submission": confusion}, classes, list(device_groups), device_groups)
    except ImportError as err:
        if (err.name or "").startswith("matplotlib"):
            print("Figures skipped: matplotlib is not installed (pip install matplotlib to get them).")
        else:  # a package exported before the figures existed
            print(f"Figures skipped: {err} (export the package again to get them).")
        return []
    paths = []
    for name, figure in figures.items():
        path = os.path.join(out_dir, name)
        figure.savefig(path + ".tmp", format="png")
        os.replace(path + ".tmp", path)
        paths.append(path)
    return paths


def print_accuracies(acc: dict) -> None:
    print(f"\nDevelopment-test split, {acc['n_files']} files")
    print(f"  overall accuracy:       {100 * acc['overall']:6.2f} %")
    print(f"  macro-average accuracy: {100 * acc['macro_average']:6.2f} %")
    print("  per class:  " + ", ".join(f"{c} {100 * v:.2f}" for c, v in acc["per_class"].items()))
    print("  per device: " + ", ".join(f"{d} {100 * v:.2f}" for d, v in acc["per_device"].items()))
    print("  per group:  " + ", ".join(f"{g} {100 * v:.2f}" for g, v in acc["per_device_group"].items()))


def percent(values: dict) -> dict:
    return {k: round(100 * v, 2) for k, v in values.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--submission_name", type=str, required=True, help="e.g. Lastname_INST_task1")
    parser.add_argument("--submission_index", type=int, required=True, help="1 to 4")
    parser.add_argument("--dev_set_dir", type=str, required=True, help="development set: meta.csv and audio/")
    parser.add_argument("--eval_set_dir", type=str, required=True,
                        help="evaluation set: audio/ and evaluation_setup/fold1_test.csv")
    parser.add_argument("--test_split_csv", type=str, default=None,
                        help="the development-test split (default: the packaged resources/test.csv)")
    args = parse_flags(parser, argv)

    api = import_submission(args.submission_name, args.submission_index)
    package = api.__package__
    use_cuda = torch.cuda.is_available()
    print(f"Submission {args.submission_name}_{args.submission_index}; CUDA: {use_cuda}")
    out_dir = os.path.join("predictions", f"{args.submission_name}_{args.submission_index}")

    report = complexity_report(api)
    print_report(report)
    write_json(os.path.join(out_dir, "complexity.json"), report)

    rows = test_rows(args, package)
    print(f"Predicting {len(rows)} files of the development-test split ...")
    logits, class_order = api.predict([os.path.join(args.dev_set_dir, f) for f in rows["filename"]],
                                      rows["source_label"].astype(str).tolist(), model_file_path=None,
                                      use_cuda=use_cuda)
    predicted = [class_order[int(x.argmax())] for x in logits]
    true_labels, devices = rows["scene_label"].tolist(), rows["source_label"].astype(str).tolist()
    acc = accuracies(true_labels, predicted, devices, class_order)
    print_accuracies(acc)
    confusion = confusion_counts(true_labels, predicted, devices, class_order)
    write_json(os.path.join(out_dir, "test_accuracy.json"), {
        "Test Accuracy": round(100 * acc["overall"], 2),
        "Macro Average Accuracy": round(100 * acc["macro_average"], 2),
        "Class-wise Accuracy": percent(acc["per_class"]),
        "Device-wise Accuracy": percent(acc["per_device"]),
        "Device Group Accuracy": percent(acc["per_device_group"]),
        "Test Files": acc["n_files"],
        "Confusion Matrix": {"rows": "true class", "columns": "predicted class", "classes": list(class_order),
                             "per_device": confusion}})
    figures = write_figures(out_dir, api, f"{args.submission_name}_{args.submission_index}", confusion,
                            class_order)

    evaluation = eval_rows(args.eval_set_dir)
    print(f"\nPredicting {len(evaluation)} files of the evaluation set ...")
    eval_logits, eval_classes = api.predict([os.path.join(args.eval_set_dir, f) for f in evaluation["filename"]],
                                            evaluation["device_id"].astype(str).tolist(), model_file_path=None,
                                            use_cuda=use_cuda)
    if eval_classes != class_order:
        raise SystemExit("The class order differs between the two predict calls.")
    probabilities = torch.stack(eval_logits).float().softmax(dim=1)
    table = pd.DataFrame({"filename": evaluation["filename"].tolist(),
                          "scene_label": [class_order[i] for i in probabilities.argmax(dim=1).tolist()]})
    for i, label in enumerate(class_order):
        table[label] = probabilities[:, i].numpy()
    output_csv = os.path.join(out_dir, "output.csv")
    table.to_csv(output_csv + ".tmp", sep="\t", index=False)
    os.replace(output_csv + ".tmp", output_csv)
    state_path = os.path.join(out_dir, "model_state_dict.pt")
    torch.save(api.load_model().model.state_dict(), state_path + ".tmp")
    os.replace(state_path + ".tmp", state_path)

    print(f"\nWritten to {out_dir}/: output.csv (submit this file), test_accuracy.json, complexity.json, "
          "model_state_dict.pt" + "".join(f", {os.path.basename(path)}" for path in figures))
    if not report["within_limits"]:
        print("FAILED: a model exceeds the complexity limits; this submission would be rejected.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
