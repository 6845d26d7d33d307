"""Throughput of the training and evaluation paths on the demo data (prints a table and ratios).

    python benchmarks/benchmark.py [--batch_size 64] [--accelerator cpu|gpu] [--ckpt_id RUN]

(a) training clips/s from in-memory 32 kHz tensors: front end + network, the ceiling;
(b) training clips/s through the project's full path from the data folder, audio cache on;
(c) training clips/s through the organisers' path: decode every file each epoch, resample in the step;
(d) evaluation clips/s of the grouped device container on a batch mixing all nine devices, computed
    as evaluation computes it (models/inference.py: on a CPU a copy of each network made for speed, in
    the arithmetic chosen for this machine); (d') the same in the other arithmetic; (d'') the networks
    themselves in the chosen dtype, whole groups at once (how evaluation computed before those copies);
(e) the same batch one clip at a time in half precision, as the organisers' container does;
(f) seconds to test the whole demo test split (both systems' final test uses this path).
(a) and (b) alternate for --rounds rounds and the best of each counts (other load only slows a run).
Targets: (b)/(a) >= 0.95, (b) >= (c), (d)/(e) >= 5. Also prints the machine, where a training step's
time goes in the in-memory loop and in Trainer.fit (Lightning's profiler), and the agreement of the
predicted classes with the organisers' half precision on the demo test split (of --ckpt_id's system,
else of a freshly initialised one).
"""
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.profilers import SimpleProfiler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import dcase25  # noqa: E402
from dataset.demo import is_complete, write_demo_dataset  # noqa: E402
from helpers.cli import build_parser, parse_args  # noqa: E402
from helpers.experiment import available_cpus, loader_workers, make_loader, open_cache  # noqa: E402
from helpers.checkpoints import hyper_parameters, load_device_system  # noqa: E402
from models import inference  # noqa: E402
from models.asc_module import SceneClassifier, store_as_submitted  # noqa: E402
from models.cp_mobile import Network  # noqa: E402
from models.frontend import LogMelFrontEnd  # noqa: E402
from models.multi_device import MultiDeviceModel  # noqa: E402


class StepTimer(L.Callback):
    """Wall time of the training batches after the first ``warmup`` ones (data loading included)."""

    def __init__(self, warmup):
        self.warmup, self.start, self.clips = warmup, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.start is not None:
            self.clips += len(batch[1])
            self.end = time.perf_counter()

    @property
    def clips_per_second(self):
        return self.clips / (self.end - self.start)


def fit_throughput(args, dataset_dir, rows, cache, steps, warmup, accelerator, profiler=None):
    """Training clips/s of ``Trainer.fit`` on real loaders (the path the scripts take)."""
    module = SceneClassifier(vars(args), input_sample_rate=args.sample_rate if cache else None)
    timer = StepTimer(warmup)
    trainer = L.Trainer(max_steps=warmup + steps, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], limit_val_batches=0, profiler=profiler)
    trainer.fit(module, make_loader(dataset_dir, rows, args, train=True, cache=cache))
    return timer.clips_per_second


def fit_parts(profiler: SimpleProfiler) -> dict:
    """Milliseconds per training step in ``Trainer.fit`` by part, from Lightning's profiler."""
    def mean_ms(suffix, prefix=""):
        durations = next(v for k, v in profiler.recorded_durations.items() if k.startswith(prefix) and k.endswith(suffix))
        return 1000 * sum(durations) / len(durations)
    batch, step = mean_ms("run_training_batch"), mean_ms(".optimizer_step", "[LightningModule]")
    forward, backward = mean_ms(".training_step", "[Strategy]"), mean_ms(".backward", "[Strategy]")
    return {"data": mean_ms("train_dataloader_next"), "training_step": forward, "backward": backward,
            "optimizer": step - forward - backward, "loop": batch - step}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def in_memory_throughput(args, waveforms, labels, steps, warmup, device, profile):
    """Training clips/s with the audio already in memory at 32 kHz; optionally the time per part."""
    module = SceneClassifier(vars(args), input_sample_rate=args.sample_rate).to(device).train()
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    parts = dict.fromkeys(["front end + augmentation", "forward", "backward", "optimizer"], 0.0)
    batch_size = args.batch_size
    clips, start = 0, None
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
            parts = dict.fromkeys(parts, 0.0)
            clips = 0  # the warm-up steps are not timed, so their clips do not count
        index = torch.randint(0, len(labels), (batch_size,))
        x, y = waveforms[index].to(device), labels[index].to(device)
        marks = [time.perf_counter()]
        features, mix = module.augment(x, ["a"] * batch_size, module.frontend)
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        loss = mix.cross_entropy(module.model(features), y)
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        optimizer.step()
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        for name, (a, b) in zip(parts, zip(marks, marks[1:])):
            parts[name] += b - a
        clips += batch_size
    synchronize(device)
    return clips / (time.perf_counter() - start), parts


def networks(system):
    return [system.base_model, *system.device_models.values()]


def forms(system, half: bool, device) -> dict:
    """Every network of ``system`` (16-bit parameters) in one arithmetic: on a CPU its copy made for
    speed (``models/inference.py``), on a GPU the network itself in that dtype."""
    if device.type == "cpu":
        return {network: inference.cpu_form(network, half) for network in networks(system)}
    return {network: copy.deepcopy(network).to(torch.float16 if half else torch.float32) for network in networks(system)}


def with_forms(table):
    """A ``compute`` for the container that runs each network's form from ``table``."""
    return lambda network, x: inference.run_form(table[network], x)


def grouped_rate(system, features, devices, compute, device, repeats=3):
    """Clips/s of the grouped device container on 16-bit ``features``, each group through ``compute``."""
    system(features, devices, compute)  # warm-up (on a CPU it also makes the copies)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        system(features, devices, compute)
    synchronize(device)
    return repeats * len(devices) / (time.perf_counter() - start)


@torch.no_grad()
def evaluation_throughput(device, input_shape):
    """(d) the grouped container as evaluation computes it (``models.inference.infer``), (d') in the
    arithmetic not chosen, (d'') the network itself, as before the copies made for speed, vs (e) one
    clip at a time in half precision, on the same batch mixing all nine devices."""
    torch.manual_seed(0)
    system = MultiDeviceModel(Network(), dcase25.TRAIN_DEVICES).to(device).eval().half()
    devices = [dcase25.DEVICES[i % 9] for i in range(256)]
    features = torch.randn(len(devices), *input_shape[1:], device=device).half()
    half = inference.half_is_faster(system.base_model, input_shape)
    rates = {"chosen": grouped_rate(system, features, devices, inference.infer, device),
             "other": grouped_rate(system, features, devices, with_forms(forms(system, not half, device)), device)}
    dtype = torch.float16 if half else torch.float32
    rates["plain"] = grouped_rate(copy.deepcopy(system).to(dtype), features.to(dtype), devices, None, device)

    n = 36 if device.type == "cpu" else 256  # half precision on a CPU can be slow: fewer clips
    system.get_model_for_device(devices[0])(features[:1])  # warm-up; the organisers' container: clip by clip
    synchronize(device)
    start = time.perf_counter()
    for i in range(n):
        system.get_model_for_device(devices[i])(features[i:i + 1])
    synchronize(device)
    return rates, n / (time.perf_counter() - start), half


@torch.no_grad()
def agreement(args, dataset_dir, cache, device, half):
    """Predicted classes on the demo test split: evaluation's way (``infer``) and the other arithmetic,
    each against the organisers' way (the networks themselves in half precision), on the same 16-bit
    parameters and features. The system: ``--ckpt_id``, or a freshly initialised one (seed 0), whose
    logits lie close together (a hard case)."""
    rows = dcase25.test_rows(dataset_dir, args.split_dir)
    if args.ckpt_id:
        system, checkpoint, _ = load_device_system(args.ckpt_id, args.project_name, allow_general=True)
        config = hyper_parameters(checkpoint)
        store_as_submitted(system)
    else:
        torch.manual_seed(0)
        system, config = MultiDeviceModel(Network(), dcase25.TRAIN_DEVICES).half(), vars(args)
    system = system.to(device).eval()
    # the run's front end, from the cache's rate (no augmentation is used: DIR's responses are not read)
    module = SceneClassifier({**config, "dir_p": 0.0}, model=system, input_sample_rate=args.sample_rate)
    frontend = module.frontend.to(device)
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
    return same, widest, len(rows)


def test_split_seconds(args, dataset_dir, cache, accelerator):
    """(f) the final test of the device-specific system on the whole (demo) test split."""
    rows = dcase25.test_rows(dataset_dir, args.split_dir)
    system = MultiDeviceModel(Network(), dcase25.TRAIN_DEVICES)
    module = SceneClassifier(vars(args), model=system, input_sample_rate=args.sample_rate)
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    loader = make_loader(dataset_dir, rows, args, train=False, cache=cache)
    start = time.perf_counter()
    trainer.test(module, loader, verbose=False)
    return time.perf_counter() - start, len(rows)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {available_cpus()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}"


def main():
    parser = build_parser("base", __doc__)
    own = parser.add_argument_group("benchmark")
    own.add_argument("--steps", type=int, default=20, help="measured training steps per path")
    own.add_argument("--warmup", type=int, default=3, help="unmeasured training steps before them")
    own.add_argument("--rounds", type=int, default=3, help="alternating rounds of (a) and (b); the best of each counts")
    own.add_argument("--ckpt_id", help="stage-2 run id or .ckpt path whose predicted classes are compared with half "
                                       "precision (default: a freshly initialised system)")
    args = parse_args(parser, ["--demo", *sys.argv[1:]])
    if not is_complete(args.dataset_dir):
        write_demo_dataset(args.dataset_dir)
    dataset_dir = Path(args.dataset_dir)
    accelerator = args.accelerator if args.accelerator != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    rows = dcase25.training_rows(dataset_dir, args.split_dir)

    with tempfile.TemporaryDirectory() as cache_dir:
        args.cache_dir = cache_dir
        start = time.perf_counter()
        cache = open_cache(args, dataset_dir, rows)
        build_seconds = time.perf_counter() - start
        test_cache = open_cache(args, dataset_dir, dcase25.test_rows(dataset_dir, args.split_dir))
        waveforms = torch.stack([cache.waveform(f) for f in rows["filename"]])
        labels = torch.tensor([dcase25.CLASSES.index(s) for s in rows["scene_label"]])
        mb_per_1000 = cache.array.nbytes / len(cache.files) * 1000 / 2**20

        # (a) and (b) alternate, the best of each counts: other load on the machine only slows a run down
        a_rounds, b_rounds = [], []
        for _ in range(args.rounds):
            a_rounds.append(in_memory_throughput(args, waveforms, labels, args.steps, args.warmup, device,
                                                 profile=False)[0])
            b_rounds.append(fit_throughput(args, dataset_dir, rows, cache, args.steps, args.warmup, accelerator))
        a, b = max(a_rounds), max(b_rounds)
        args.cache_dir = None
        c = fit_throughput(args, dataset_dir, rows, None, args.steps, args.warmup, accelerator)
        args.cache_dir = cache_dir
        input_shape = LogMelFrontEnd(sample_rate=args.sample_rate).input_shape()
        rates, e, half = evaluation_throughput(device, input_shape)
        same, widest, n_agree = agreement(args, dataset_dir, test_cache, device, half)
        f, n_test = test_split_seconds(args, dataset_dir, test_cache, accelerator)
        steps = max(5, args.steps // 2)
        _, parts = in_memory_throughput(args, waveforms, labels, steps, args.warmup, device, profile=True)
        profiler = SimpleProfiler(dirpath=cache_dir, filename="fit_profile")  # its report goes to that file
        fit_throughput(args, dataset_dir, rows, cache, steps, args.warmup, accelerator, profiler)

    d = rates["chosen"]
    print(f"\nMachine: {machine()}; batch size {args.batch_size}, {loader_workers(args, cache)} loader workers, "
          f"{args.steps} measured steps per path, best of {args.rounds} rounds for (a) and (b)")
    print("Rounds (clips/s): (a) " + ", ".join(f"{x:.1f}" for x in a_rounds)
          + "; (b) " + ", ".join(f"{x:.1f}" for x in b_rounds))
    print(f"Audio cache: {mb_per_1000:.1f} MB per 1,000 clips (built in {build_seconds:.1f} s for {len(rows)} clips)\n")
    print("| measure | value |\n|---|---:|")
    print(f"| (a) training, in-memory 32 kHz tensors (ceiling) | {a:.1f} clips/s |")
    print(f"| (b) training, project path from the data folder, cache on | {b:.1f} clips/s |")
    print(f"| (c) training, organisers' path (decode + resample every epoch) | {c:.1f} clips/s |")
    chosen, other = ("half precision", "32 bits") if half else ("32 bits", "half precision")
    made = "copies made for speed, " if device.type == "cpu" else ""
    print(f"| (d) evaluation, grouped container, 9 devices mixed, {made}in {chosen} (chosen here) | {d:.1f} clips/s |")
    print(f"| (d') the same in {other} (not chosen) | {rates['other']:.1f} clips/s |")
    print(f"| (d'') the same, the networks themselves in {chosen}, whole groups | {rates['plain']:.1f} clips/s |")
    print(f"| (e) evaluation, one clip at a time in half precision | {e:.1f} clips/s |")
    print(f"| (f) final test of the demo test split ({n_test} clips) | {f:.1f} s ({n_test / f:.0f} clips/s) |")
    print(f"\n(b)/(a) = {b / a:.3f} (target >= 0.95)   (b)/(c) = {b / c:.2f} (target >= 1)   "
          f"(d)/(e) = {d / e:.1f} (target >= 5)")
    system = f"system {args.ckpt_id}" if args.ckpt_id else "freshly initialised system (seed 0)"
    print(f"\nPredicted classes on the demo test split ({system}), against the networks themselves in half precision:")
    for name, label in (("chosen", f"{chosen} (chosen)"), ("other", other)):
        print(f"  {label}: {same[name]} of {n_agree} the same ({100 * same[name] / n_agree:.2f} %)"
              + (f"; where they differ, the two best logits lie at most {widest[name]:.2g} apart"
                 if same[name] < n_agree else ""))
    total = sum(parts.values())
    print("\nWhere a training step's time goes, in-memory loop: "
          + ", ".join(f"{name} {1000 * t / steps:.0f} ms ({100 * t / total:.0f} %)" for name, t in parts.items()))
    fit = fit_parts(profiler)
    print("Trainer.fit, project path (Lightning's profiler): "
          f"fetching the batch {fit['data']:.1f} ms, training_step (augmentation, forward, loss, logging) "
          f"{fit['training_step']:.0f} ms, backward {fit['backward']:.0f} ms, optimizer and scheduler "
          f"{fit['optimizer']:.1f} ms, Lightning's loop and hooks {fit['loop']:.1f} ms; "
          f"{sum(fit.values()):.0f} ms per step vs {1000 * total / steps:.0f} ms in the in-memory loop")


if __name__ == "__main__":
    main()
