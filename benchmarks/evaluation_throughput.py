"""Evaluation throughput for ``benchmarks/benchmark.py``: the grouped device container as evaluation
computes it and in the other arithmetic, against one clip at a time; the agreement of the predicted classes;
the final test of the demo test split."""
import copy
import time

import lightning as L
import torch
from benchmarks.training_throughput import synchronize

from dataset import dcase25
from helpers.setup.checkpoints import hyper_parameters
from helpers.setup.data import make_loader
from helpers.setup.model_loader import read_device_system
from helpers.training.builder import build_module
from models import inference
from models.cp_mobile import Network
from models.multi_device import MultiDeviceModel


def arithmetic_names(half: bool) -> tuple:
    """(the chosen arithmetic, the other one) in words."""
    return ("half precision", "32 bits") if half else ("32 bits", "half precision")


def networks(system):
    return [system.base_model, *system.device_models.values()]


def forms(system, half: bool, device) -> dict:
    """Every network of ``system`` (16-bit parameters) in one arithmetic: on a CPU its copy made for
    speed (``models/inference.py``), on a GPU the network itself in that dtype."""
    if device.type == "cpu":
        return {network: inference.cpu_form(network, half) for network in networks(system)}
    dtype = torch.float16 if half else torch.float32
    return {network: copy.deepcopy(network).to(dtype) for network in networks(system)}


def with_forms(table):
    """A ``compute`` for the container that runs each network's form from ``table``."""
    return lambda network, x: inference.run_form(table[network], x)


def best_seconds(action, device, repeats: int) -> float:
    """The fastest of ``repeats`` timed runs of ``action``, after one untimed one (other load on the
    machine only ever slows a run down)."""
    action()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        action()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def grouped_rate(system, features, devices, compute, device, repeats=5):
    """Clips/s of the grouped device container on 16-bit ``features``, each group through ``compute``
    (the untimed first run also makes the copies on a CPU)."""
    return len(devices) / best_seconds(lambda: system(features, devices, compute), device, repeats)


@torch.no_grad()
def evaluation_throughput(device, input_shape):
    """(d) the grouped container as evaluation computes it (``models.inference.infer``), (d') in the
    arithmetic not chosen, (d'') the network itself, without the copies made for speed, vs (e) one
    clip at a time in half precision, on the same batch mixing all nine devices."""
    torch.manual_seed(0)
    system = MultiDeviceModel(Network(), dcase25.TRAIN_DEVICES).to(device).eval().half()
    devices = [dcase25.DEVICES[i % 9] for i in range(256)]
    features = torch.randn(len(devices), *input_shape[1:], device=device).half()
    half = device.type != "cpu"  # what evaluation computes in (models/inference.py)
    rates = {"chosen": grouped_rate(system, features, devices, inference.infer, device),
             "other": grouped_rate(system, features, devices, with_forms(forms(system, not half, device)), device)}
    dtype = torch.float16 if half else torch.float32
    rates["plain"] = grouped_rate(copy.deepcopy(system).to(dtype), features.to(dtype), devices, None, device)

    n = 36 if device.type == "cpu" else 256  # half precision on a CPU can be slow: fewer clips

    def clip_by_clip():  # the organisers' container
        for i in range(n):
            system.get_model_for_device(devices[i])(features[i:i + 1])
    return rates, n / best_seconds(clip_by_clip, device, repeats=3), half


@torch.no_grad()
def agreement(args, dataset_dir, cache, device):
    """Predicted classes on the demo test split: evaluation's way (``infer``) and the other arithmetic,
    each against the organisers' way (the networks themselves in half precision), on the same 16-bit
    parameters and features. The system: ``--ckpt_id``, or a freshly initialised one (seed 0), whose
    logits lie close together (a hard case)."""
    rows = dcase25.test_rows(dataset_dir, args.split_dir)
    if args.ckpt_id:
        system, checkpoint, _ = read_device_system(args.ckpt_id, args.project_name)
        config = hyper_parameters(checkpoint)
        inference.store_for_submission(system)
    else:
        torch.manual_seed(0)
        system, config = MultiDeviceModel(Network(), dcase25.TRAIN_DEVICES).half(), vars(args)
    system = system.to(device).eval()
    # the run's front end, from the cache's rate (no augmentation is used: DIR's responses are not read)
    module = build_module({**config, "dir_p": 0.0}, model=system, input_sample_rate=args.sample_rate)
    frontend = module.frontend.to(device)
    half = device.type != "cpu"  # what evaluation computes in (models/inference.py)
    ways = {"chosen": inference.infer, "other": with_forms(forms(system, not half, device))}
    same, widest = dict.fromkeys(ways, 0), dict.fromkeys(ways, 0.0)
    for start in range(0, len(rows), 256):
        part = rows.iloc[start:start + 256]
        features = frontend(cache.waveforms(part["filename"].tolist()).to(device)).half()
        devices = part["source_label"].tolist()
        reference = system(features, devices).float()  # half precision, the networks themselves
        for name, compute in ways.items():
            logits = system(features, devices, compute)
            differ = logits.argmax(1) != reference.argmax(1)
            same[name] += int((~differ).sum())
            if differ.any():  # how close the two best logits were where the classes differ
                top2 = logits[differ].topk(2, dim=1).values
                widest[name] = max(widest[name], float((top2[:, 0] - top2[:, 1]).max()))
    return same, widest, len(rows), half


def test_split_seconds(args, dataset_dir, cache, accelerator):
    """(f) the final test of the device-specific system on the whole (demo) test split."""
    rows = dcase25.test_rows(dataset_dir, args.split_dir)
    system = MultiDeviceModel(Network(), dcase25.TRAIN_DEVICES)
    module = build_module(vars(args), model=system, input_sample_rate=args.sample_rate)
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    loader = make_loader(dataset_dir, rows, args, train=False, cache=cache)
    start = time.perf_counter()
    trainer.test(module, loader, verbose=False)
    return time.perf_counter() - start, len(rows)
