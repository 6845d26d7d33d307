"""Throughput of the training and evaluation paths on the demo data (prints a table and ratios).

    python benchmarks/benchmark.py [--batch_size 64] [--accelerator cpu|gpu] [--ckpt_id RUN]

(a) training clips/s from in-memory 32 kHz tensors: front end + network, the ceiling;
(b) training clips/s through the project's full path from the data folder, audio cache on;
(c) training clips/s through the organisers' path: decode every file each epoch, resample in the step;
(d) evaluation clips/s of the grouped device container on a batch mixing all nine devices, computed
    as evaluation computes it (models/inference.py: on a CPU a copy of each network made for speed, in
    32 bits on a CPU, half precision on a GPU); (d') the same in the other arithmetic; (d'') the networks
    themselves in the chosen dtype, whole groups at once (how evaluation computed before those copies);
(e) the same batch one clip at a time in half precision, as the organisers' container does;
(f) seconds to test the whole demo test split (both systems' final test uses this path).
(a), (b) and (c) are the batch size over the median time of a training step (full batches; for (b)
and (c) from the end of one batch to the end of the next, fetching included). (a) and (b) run
interleaved, one step of each in turn, so that both see the same load: on a shared machine it
changes from one second to the next, and the median leaves out the steps it slowed down. (d) to (e)
are the fastest of repeated runs, for the same reason.
Targets: (b)/(a) >= 0.95, (b) >= (c), (d)/(e) >= 5. Also prints the machine, where a training step's
time goes in the in-memory loop and in Trainer.fit (Lightning's profiler), and the agreement of the
predicted classes with the organisers' half precision on the demo test split (of --ckpt_id's system,
else of a freshly initialised one).
"""
import copy
import platform
import statistics
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
from helpers.setup.checkpoints import hyper_parameters  # noqa: E402
from helpers.setup.data import available_cpus, loader_workers, make_loader, open_cache  # noqa: E402
from helpers.setup.flags import build_parser, parse_args  # noqa: E402
from helpers.setup.model_loader import read_device_system  # noqa: E402
from helpers.training.losses import label_loss  # noqa: E402
from helpers.training.module import SceneClassifier  # noqa: E402
from models import inference  # noqa: E402
from models.cp_mobile import Network  # noqa: E402
from models.frontend import LogMelFrontEnd  # noqa: E402
from models.multi_device import MultiDeviceModel  # noqa: E402


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class InMemoryLoop:
    """Training steps with the audio already in memory at 32 kHz: front end + network, nothing else."""

    PARTS = ("front end + augmentation", "forward", "backward", "optimizer")

    def __init__(self, args, waveforms, labels, device):
        self.module = SceneClassifier(vars(args), input_sample_rate=args.sample_rate).to(device).train()
        self.module.on_fit_start()  # as Trainer.fit does: the memory format the training runs in
        self.optimizer = torch.optim.AdamW(self.module.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        self.waveforms, self.labels, self.device, self.batch_size = waveforms, labels, device, args.batch_size
        self.parts = dict.fromkeys(self.PARTS, 0.0)  # seconds of each part, summed over the steps

    def step(self, profile=False) -> float:
        """One training step; its seconds."""
        device, batch_size = self.device, self.batch_size
        synchronize(device)
        marks = [time.perf_counter()]
        index = torch.randint(0, len(self.labels), (batch_size,))
        x, y = self.waveforms[index].to(device), self.labels[index].to(device)
        features, mix = self.module.augment(x, ["a"] * batch_size, self.module.frontend)
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        loss = label_loss(self.module.model(features), y, mix)
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        self.optimizer.step()
        synchronize(device)
        marks.append(time.perf_counter())
        for name, (a, b) in zip(self.PARTS, zip(marks, marks[1:])):
            self.parts[name] += b - a
        return marks[-1] - marks[0]


class StepTimer(L.Callback):
    """Seconds of the training steps of ``Trainer.fit`` after the first ``warmup`` ones, from the end of
    one batch to the end of the next (fetching the batch and Lightning's loop included), full batches
    only (an epoch's last batch can be smaller). With ``interleaved`` (an ``InMemoryLoop``) one of its
    steps runs, timed on its own, after each step of the fit: both paths measured step by step under
    the same load, which on a shared machine changes from one second to the next."""

    def __init__(self, warmup, batch_size, device, interleaved=None):
        self.warmup, self.batch_size, self.device, self.interleaved = warmup, batch_size, device, interleaved
        self.seconds, self.interleaved_seconds, self.last = [], [], None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        synchronize(self.device)
        now = time.perf_counter()
        if self.last is not None and trainer.global_step > self.warmup and len(batch[1]) == self.batch_size:
            self.seconds.append(now - self.last)
        if self.interleaved is not None:
            seconds = self.interleaved.step()
            if trainer.global_step > self.warmup:
                self.interleaved_seconds.append(seconds)
        self.last = time.perf_counter()


def fit_steps(args, dataset_dir, rows, cache, steps, warmup, accelerator, interleaved=None, profiler=None):
    """The ``StepTimer`` of ``Trainer.fit`` on real loaders (the path the scripts take)."""
    module = SceneClassifier(vars(args), input_sample_rate=args.sample_rate if cache else None)
    timer = StepTimer(warmup, args.batch_size, torch.device("cuda" if accelerator == "gpu" else "cpu"), interleaved)
    trainer = L.Trainer(max_steps=warmup + steps, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], limit_val_batches=0, profiler=profiler)
    trainer.fit(module, make_loader(dataset_dir, rows, args, train=True, cache=cache))
    return timer


def fit_parts(profiler: SimpleProfiler) -> dict:
    """Milliseconds per training step in ``Trainer.fit`` by part, from Lightning's profiler."""
    def mean_ms(suffix, prefix=""):
        durations = next(v for name, v in profiler.recorded_durations.items()
                         if name.startswith(prefix) and name.endswith(suffix))
        return 1000 * sum(durations) / len(durations)
    batch, step = mean_ms("run_training_batch"), mean_ms(".optimizer_step", "[LightningModule]")
    forward, backward = mean_ms(".training_step", "[Strategy]"), mean_ms(".backward", "[Strategy]")
    return {"data": mean_ms("train_dataloader_next"), "training_step": forward, "backward": backward,
            "optimizer": step - forward - backward, "loop": batch - step}


def clips_per_second(args, step_seconds) -> float:
    return args.batch_size / statistics.median(step_seconds)


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
    arithmetic not chosen, (d'') the network itself, as before the copies made for speed, vs (e) one
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
    module = SceneClassifier({**config, "dir_p": 0.0}, model=system, input_sample_rate=args.sample_rate)
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
    own.add_argument("--steps", type=int, default=60, help="measured training steps per path")
    own.add_argument("--warmup", type=int, default=3, help="unmeasured training steps before them")
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

        # (a) and (b) step by step, interleaved in one fit (see StepTimer)
        timer = fit_steps(args, dataset_dir, rows, cache, args.steps, args.warmup, accelerator,
                          interleaved=InMemoryLoop(args, waveforms, labels, device))
        a_steps, b_steps = timer.interleaved_seconds, timer.seconds
        a, b = clips_per_second(args, a_steps), clips_per_second(args, b_steps)
        args.cache_dir = None
        organisers = fit_steps(args, dataset_dir, rows, None, args.steps, args.warmup, accelerator)
        c = clips_per_second(args, organisers.seconds)
        args.cache_dir = cache_dir
        input_shape = LogMelFrontEnd(sample_rate=args.sample_rate).input_shape()
        rates, e, half = evaluation_throughput(device, input_shape)
        same, widest, n_agree, agreement_half = agreement(args, dataset_dir, test_cache, device)
        f, n_test = test_split_seconds(args, dataset_dir, test_cache, accelerator)
        steps = max(5, args.steps // 4)
        loop = InMemoryLoop(args, waveforms, labels, device)
        for step in range(args.warmup + steps):
            if step == args.warmup:
                loop.parts = dict.fromkeys(loop.parts, 0.0)  # the warm-up steps are not counted
            loop.step(profile=True)
        parts = loop.parts
        profiler = SimpleProfiler(dirpath=cache_dir, filename="fit_profile")  # its report goes to that file
        fit_steps(args, dataset_dir, rows, cache, steps, args.warmup, accelerator, profiler=profiler)

    d = rates["chosen"]
    print(f"\nMachine: {machine()}; batch size {args.batch_size}, {loader_workers(args, cache)} loader workers; "
          f"(a) and (b) interleaved step by step over {args.steps} steps, clips/s from the median step time")
    spread = lambda seconds: f"{1000 * min(seconds):.0f}-{1000 * max(seconds):.0f} ms"  # noqa: E731
    print(f"Steps of full batches: (a) {len(a_steps)}, {spread(a_steps)}; (b) {len(b_steps)}, {spread(b_steps)}")
    print(f"Audio cache: {mb_per_1000:.1f} MB per 1,000 clips (built in {build_seconds:.1f} s for {len(rows)} clips)\n")
    print("| measure | value |\n|---|---:|")
    print(f"| (a) training, in-memory 32 kHz tensors (ceiling) | {a:.1f} clips/s |")
    print(f"| (b) training, project path from the data folder, cache on | {b:.1f} clips/s |")
    print(f"| (c) training, organisers' path (decode + resample every epoch) | {c:.1f} clips/s |")
    chosen, other = arithmetic_names(half)
    made = "copies made for speed, " if device.type == "cpu" else ""
    print(f"| (d) evaluation, grouped container, 9 devices mixed, {made}in {chosen} | {d:.1f} clips/s |")
    print(f"| (d') the same in {other} | {rates['other']:.1f} clips/s |")
    print(f"| (d'') the same, the networks themselves in {chosen}, whole groups | {rates['plain']:.1f} clips/s |")
    print(f"| (e) evaluation, one clip at a time in half precision | {e:.1f} clips/s |")
    print(f"| (f) final test of the demo test split ({n_test} clips) | {f:.1f} s ({n_test / f:.0f} clips/s) |")
    print(f"\n(b)/(a) = {b / a:.3f} (target >= 0.95)   (b)/(c) = {b / c:.2f} (target >= 1)   "
          f"(d)/(e) = {d / e:.1f} (target >= 5)")
    system = f"system {args.ckpt_id}" if args.ckpt_id else "freshly initialised system (seed 0)"
    print(f"\nPredicted classes on the demo test split ({system}), against the networks themselves in half precision:")
    agreement_chosen, agreement_other = arithmetic_names(agreement_half)
    for name, label in (("chosen", f"{agreement_chosen} (chosen)"), ("other", agreement_other)):
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
