"""Write the teacher file for knowledge distillation, from one run or an ensemble of runs:

    python -m helpers.write_teacher_logits teacher1 teacher2 --dataset_dir DIR --out teachers.tsv
    python -m helpers.write_teacher_logits RUN [RUN ...] --demo --out teacher_logits.tsv

RUN is a run id (or .ckpt path) of train_base.py, a general teacher (every clip through its
model), or of train_device_specific.py, a device-specific teacher (every clip through its
device's model, other devices through the general model). Each run's network and its own front end
come from its checkpoint, so runs of different networks (PaSST, CP-ResNet, CP-Mobile) form one
ensemble; the clips go through in batches of --batch_size, on a GPU when there is one. The logits
of every clip of the 25 % split and of the development-test split are computed once, in evaluation
mode (no augmentation) in 32-bit floats, and averaged over the runs. The file's format:
helpers/training/teacher_file.py and docs/distillation.md.
"""
import argparse
from pathlib import Path

import pandas as pd
import torch

from dataset.dcase25 import CLASSES, test_rows, training_rows
from helpers.setup.checkpoints import hyper_parameters, load_checkpoint, resolve_checkpoint
from helpers.setup.console import rank_zero_print, run_cli
from helpers.setup.data import check_audio, input_sample_rate, make_loader, open_cache, prepare_dataset_dir
from helpers.setup.flags import build_parser, parse_args
from helpers.setup.model_loader import read_device_system
from helpers.training.builder import build_module
from helpers.training.metrics import SceneDeviceAccuracy
from helpers.training.module import SceneClassifier
from helpers.training.teacher_file import TeacherLogits


def build_parser_teacher():
    parser = build_parser("base", __doc__)
    teacher = parser.add_argument_group("teacher logits")
    teacher.add_argument("runs", nargs="+", metavar="RUN", help="run ids or .ckpt paths of the teachers")
    teacher.add_argument("--out", type=str, required=True, help="the teacher file to write (TAB-separated)")
    teacher.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser


def load_teacher(run, args) -> SceneClassifier:
    """The run's model (general, or device-specific container) in evaluation mode, on a GPU when there is
    one, with the network and its front end as trained; audio arrives as this command's loaders deliver it."""
    path = resolve_checkpoint(str(run), args.project_name)
    config = argparse.Namespace(**{**vars(args), **hyper_parameters(load_checkpoint(path, mmap=True))})
    # the network (any registered one) is rebuilt from the checkpoint alone
    system, _, _ = read_device_system(path, args.project_name, prefix=args.ckpt_prefix)
    module = build_module(vars(config), model=system, input_sample_rate=input_sample_rate(args))
    kind = f"device models {', '.join(system.device_models)}" if len(system.device_models) else "general model"
    rank_zero_print(f"Teacher {run}: {path} ({kind}).")
    return module.float().eval().to("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def clip_logits(module, loaders, names) -> torch.Tensor:
    """``[len(names), n_classes]``: the logits of clips ``names`` (all in ``loaders``), in that order."""
    device = next(module.parameters()).device
    by_name = {}
    for loader in loaders:
        for waveform, _, devices, filenames in loader:
            by_name.update(zip(filenames, module(waveform.to(device).float(), devices).float().cpu()))
    return torch.stack([by_name[name] for name in names])


def accuracy_on(rows: pd.DataFrame, logits: torch.Tensor) -> dict:
    """Accuracies of ``logits`` (one row per clip of the labelled ``rows``)."""
    metric = SceneDeviceAccuracy()
    labels = torch.tensor([CLASSES.index(label) for label in rows["scene_label"]])
    metric.update(logits, labels, rows["source_label"].tolist())
    return metric.compute()


def main(argv=None):
    args = parse_args(build_parser_teacher(), argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"--out {out} exists already; pass --overwrite to replace it.")
    dataset_dir = prepare_dataset_dir(args)
    train, test = training_rows(dataset_dir, args.split_dir, args.subset), test_rows(dataset_dir, args.split_dir)
    check_audio(args, dataset_dir, train, test)
    loaders = [make_loader(dataset_dir, rows, args, train=False, cache=open_cache(args, dataset_dir, rows))
               for rows in (train, test)]
    names = pd.concat([train["filename"], test["filename"]]).drop_duplicates().tolist()
    test_index = pd.Index(names).get_indexer(test["filename"])

    members = [clip_logits(load_teacher(run, args), loaders, names) for run in args.runs]
    mean = torch.stack(members).mean(dim=0)
    table = ["| teacher | test acc. | test macro avg. acc. |", "|---|---:|---:|"]
    for name, logits in zip(args.runs, members):
        results = accuracy_on(test, logits[test_index])
        table.append(f"| {name} | {100 * results['acc']:.2f} | {100 * results['macro_avg_acc']:.2f} |")
    if len(members) > 1:
        results = accuracy_on(test, mean[test_index])
        table.append(f"| ensemble of {len(members)} | {100 * results['acc']:.2f} | "
                     f"{100 * results['macro_avg_acc']:.2f} |")

    TeacherLogits(names, mean, out).write(out)
    print("\n".join(table))
    print(f"Teacher logits of {len(names)} clips ({len(train)} training, {len(test)} test): {out.resolve()}")
    return out


if __name__ == "__main__":
    run_cli(main)
