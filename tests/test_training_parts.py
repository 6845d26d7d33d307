"""Learning-rate schedule, the scene/device metric, wandb mode resolution, the command line, the run a stage
takes and its logging interval, and the training step's memory format (with the benchmark's copy of the step)."""
import math

import pytest
import torch
import torch.nn.functional as F

from dataset.dcase25 import CLASSES, DEVICE_GROUPS, DEVICES
from helpers.setup.data import available_cpus, loader_workers
from helpers.setup.defaults import DEMO_DEFAULTS
from helpers.setup.flags import build_parser, parse_args
from helpers.setup.loggers import resolve_wandb_mode, wandb_has_credentials
from helpers.setup.runs import RUN_ID_ENV
from helpers.setup.trainer import log_interval
from helpers.stage import Stage
from helpers.training.metrics import SceneDeviceAccuracy
from helpers.training.module import warmup_cosine

# ------------------------------------------------------------------ learning-rate schedule

@pytest.mark.parametrize("warmup, total", [(2000, 10000), (200, 1001), (10, 50)])
def test_warmup_cosine_key_points(warmup, total):
    assert warmup_cosine(0, warmup, total) == 0.0
    assert warmup_cosine(warmup // 2, warmup, total) == pytest.approx((warmup // 2) / warmup)
    assert warmup_cosine(warmup, warmup, total) == pytest.approx(1.0)
    middle = warmup + (total - warmup) / 2
    assert warmup_cosine(middle, warmup, total) == pytest.approx(0.5)
    assert warmup_cosine(total, warmup, total) == pytest.approx(0.0, abs=1e-12)
    last = warmup_cosine(total - 1, warmup, total)  # the last 0-based step: nearly 0
    assert 0 < last == pytest.approx(0.5 * (1 + math.cos(math.pi * (total - 1 - warmup) / (total - warmup))))
    assert last < 0.01
    assert warmup_cosine(total + 5, warmup, total) == pytest.approx(0.0, abs=1e-12)  # stays 0


def test_warmup_cosine_formula_and_monotone():
    warmup, total = 100, 1000
    values = [warmup_cosine(step, warmup, total) for step in range(total + 1)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(b > a for a, b in zip(values[:warmup], values[1:warmup + 1]))  # rising warm-up
    assert all(b <= a for a, b in zip(values[warmup:], values[warmup + 1:]))  # falling decay
    for step in (150, 400, 777):
        progress = (step - warmup) / (total - warmup)
        assert values[step] == pytest.approx(0.5 * (1 + math.cos(math.pi * progress)))
    for step in (1, 37, 99):
        assert values[step] == pytest.approx(step / warmup)


def test_warmup_cosine_without_warmup():
    assert warmup_cosine(0, 0, 100) == pytest.approx(1.0)
    assert warmup_cosine(50, 0, 100) == pytest.approx(0.5)


# ------------------------------------------------------------------ metric

def _hand_metrics(logits, labels, devices):
    """Everything computed directly from the predictions, with python lists."""
    losses = F.cross_entropy(logits.double(), labels, reduction="none").tolist()
    correct = (logits.argmax(1) == labels).tolist()
    labels = labels.tolist()
    n = len(labels)

    def acc(idx):
        return sum(correct[i] for i in idx) / len(idx)

    def loss(idx):
        return sum(losses[i] for i in idx) / len(idx)

    def add(name, idx):
        if idx:
            out[f"acc.{name}"] = acc(idx)
            out[f"loss.{name}"] = loss(idx)
            out[f"count.{name}"] = len(idx)

    out = {"count": n, "acc": acc(range(n)), "loss": loss(range(n))}
    per_class = []
    for c, name in enumerate(CLASSES):
        idx = [i for i in range(n) if labels[i] == c]
        add(name, idx)
        if idx:
            per_class.append(acc(idx))
    out["macro_avg_acc"] = sum(per_class) / len(per_class)
    known = set(DEVICES)
    for device in DEVICES:
        add(device, [i for i in range(n) if devices[i] == device])
    add("unknown", [i for i in range(n) if devices[i] not in known])
    for group in ("real", "seen", "unseen"):
        add(group, [i for i in range(n) if DEVICE_GROUPS.get(devices[i]) == group])
    return out


def _random_batch(n, seed, device_pool):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=gen) * 2
    labels = torch.randint(0, 10, (n,), generator=gen)
    # make about half the predictions right so accuracies are not all near 10 %
    right = torch.rand(n, generator=gen) < 0.5
    logits[right, labels[right]] += 10
    devices = [device_pool[int(i)] for i in torch.randint(0, len(device_pool), (n,), generator=gen)]
    return logits, labels, devices


def test_metric_matches_hand_computation():
    pool = DEVICES + ["unknown", "s7", "phone"]
    batches = [_random_batch(n, seed, pool) for n, seed in ((37, 0), (64, 1), (5, 2))]
    metric = SceneDeviceAccuracy()
    for logits, labels, devices in batches:
        metric.update(logits, labels, devices)
    result = metric.compute()

    logits = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    devices = [d for b in batches for d in b[2]]
    expected = _hand_metrics(logits, labels, devices)
    assert set(result) == set(expected)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    # sanity of the example itself: unknown ids present, and they count in the overall accuracy
    assert "acc.unknown" in result
    assert result["acc"] == pytest.approx(sum((logits.argmax(1) == labels).tolist()) / len(labels))


def test_metric_tiny_example_by_hand():
    # 4 clips: airport on a (right), airport on s4 (wrong), bus on b (right), bus on 'xyz' (right)
    logits = torch.full((4, 10), -5.0)
    logits[0, 0] = 5.0   # airport, right
    logits[1, 1] = 5.0   # airport, predicted bus: wrong
    logits[2, 1] = 5.0   # bus, right
    logits[3, 1] = 5.0   # bus, right
    labels = torch.tensor([0, 0, 1, 1])
    metric = SceneDeviceAccuracy()
    metric.update(logits, labels, ["a", "s4", "b", "xyz"])
    r = metric.compute()
    assert r["acc"] == pytest.approx(0.75)
    assert r["acc.airport"] == pytest.approx(0.5)
    assert r["acc.bus"] == pytest.approx(1.0)
    assert r["macro_avg_acc"] == pytest.approx(0.75)  # only classes with clips
    assert r["acc.a"] == 1.0 and r["acc.b"] == 1.0 and r["acc.s4"] == 0.0 and r["acc.unknown"] == 1.0
    assert r["acc.real"] == 1.0 and r["acc.unseen"] == 0.0
    assert "acc.seen" not in r and "acc.metro" not in r and "acc.s1" not in r
    ce_right = -torch.log_softmax(logits[0], 0)[0].item()
    ce_wrong = -torch.log_softmax(logits[1], 0)[0].item()
    assert r["loss.airport"] == pytest.approx((ce_right + ce_wrong) / 2)
    assert r["loss.bus"] == pytest.approx(ce_right)
    assert r["loss"] == pytest.approx((3 * ce_right + ce_wrong) / 4)


def test_metric_confusion_counts_by_hand():
    pool = DEVICES + ["xyz"]
    batches = [_random_batch(n, seed, pool) for n, seed in ((50, 4), (31, 5))]
    metric = SceneDeviceAccuracy()
    for logits, labels, devices in batches:
        metric.update(logits, labels, devices)
    counts = metric.confusion_counts()
    expected = {}
    for logits, labels, devices in batches:
        for device, true, predicted in zip(devices, labels.tolist(), logits.argmax(1).tolist()):
            matrix = expected.setdefault(device if device in DEVICES else "unknown", [[0] * 10 for _ in range(10)])
            matrix[true][predicted] += 1  # rows: true class, columns: predicted class
    assert counts == expected
    result = metric.compute()  # the counts and the accuracies come from the same state
    for c, name in enumerate(CLASSES):
        n = sum(sum(m[c]) for m in counts.values())
        assert result[f"count.{name}"] == n
        assert result[f"acc.{name}"] == pytest.approx(sum(m[c][c] for m in counts.values()) / n)


def test_metric_macro_differs_from_overall_on_imbalance():
    # class 0: 9 clips all right; class 1: 1 clip wrong -> overall 0.9, macro 0.5
    logits = torch.zeros(10, 10)
    logits[:, 0] = 1.0
    labels = torch.tensor([0] * 9 + [1])
    metric = SceneDeviceAccuracy()
    metric.update(logits, labels, ["a"] * 10)
    r = metric.compute()
    assert r["acc"] == pytest.approx(0.9)
    assert r["macro_avg_acc"] == pytest.approx(0.5)


def test_metric_reset():
    metric = SceneDeviceAccuracy()
    logits, labels, devices = _random_batch(20, 3, DEVICES)
    metric.update(logits, labels, devices)
    metric.reset()
    metric.update(logits[:4], labels[:4], devices[:4])
    expected = _hand_metrics(logits[:4], labels[:4], devices[:4])
    assert metric.compute()["acc"] == pytest.approx(expected["acc"])


# ------------------------------------------------------------------ wandb mode

@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    return tmp_path


def test_wandb_offline_without_credentials(no_credentials):
    assert not wandb_has_credentials()
    assert resolve_wandb_mode() == "offline"
    assert resolve_wandb_mode(None) == "offline"


def test_wandb_online_with_api_key(no_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode() == "online"


def test_wandb_online_with_netrc(no_credentials):
    netrc_file = no_credentials / ".netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    netrc_file.chmod(0o600)
    assert wandb_has_credentials()
    assert resolve_wandb_mode() == "online"


def test_wandb_env_mode_used(no_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode() == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode() == "offline"  # env beats credentials


def test_wandb_explicit_flag_wins(no_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode("disabled") == "disabled"
    assert resolve_wandb_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_wandb_mode("offline") == "offline"


# ------------------------------------------------------------------ command line

ORGANISER_FLAGS = ["project_name", "experiment_name", "num_workers", "precision", "check_val_every_n_epoch",
                   "orig_sample_rate", "subset", "n_classes", "in_channels", "base_channels",
                   "channels_multiplier", "expansion_rate", "n_epochs", "batch_size", "mixstyle_p",
                   "mixstyle_alpha", "weight_decay", "roll_sec", "lr", "warmup_steps", "sample_rate",
                   "window_length", "hop_length", "n_fft", "n_mels", "freqm", "timem", "f_min", "f_max"]


def test_stage1_defaults_are_the_organisers():
    args = parse_args(build_parser("base", ""), [])
    for flag in ORGANISER_FLAGS:
        assert hasattr(args, flag), flag
    # --num_workers: unset means the organisers' 8, except for the audio cache on a CPU (loader_workers)
    assert args.num_workers is None and loader_workers(args, None) == min(8, available_cpus())
    expected = dict(project_name="DCASE25_Task1", experiment_name="Baseline_general",
                    precision="32", check_val_every_n_epoch=10, orig_sample_rate=44100, subset=25,
                    n_classes=10, in_channels=1, base_channels=32, channels_multiplier=1.8,
                    expansion_rate=2.1, n_epochs=150, batch_size=256, mixstyle_p=0.4, mixstyle_alpha=0.3,
                    weight_decay=1e-4, roll_sec=0.1, lr=0.005, warmup_steps=2000, sample_rate=32000,
                    window_length=3072, hop_length=500, n_fft=4096, n_mels=256, freqm=48, timem=0,
                    f_min=0, f_max=None, demo=False)
    assert {k: getattr(args, k) for k in expected} == expected


def test_stage2_defaults():
    args = parse_args(build_parser("device", ""), [])
    assert (args.experiment_name, args.n_epochs, args.lr, args.warmup_steps, args.mixstyle_p) == \
        ("Baseline_multi_device", 50, 5e-4, 200, 0.0)
    assert args.batch_size == 256 and args.weight_decay == 1e-4


def test_demo_replaces_defaults_but_keeps_explicit_flags():
    args = parse_args(build_parser("base", ""), ["--demo", "--n_epochs", "3"])
    assert args.n_epochs == 3  # explicit
    demo = DEMO_DEFAULTS["base"]
    assert args.batch_size == demo["batch_size"] == 64
    assert args.warmup_steps == demo["warmup_steps"]
    assert args.check_val_every_n_epoch == demo["check_val_every_n_epoch"]
    assert args.cache_dir == demo["cache_dir"]
    assert args.lr == 0.005  # not a demo default: stage default kept
    assert args.dataset_dir == "demo_data"
    assert args.split_dir.replace("\\", "/") == "demo_data/split_setup"


def test_demo_keeps_explicit_flag_equal_to_normal_default():
    args = parse_args(build_parser("base", ""), ["--batch_size", "256", "--demo", "--num_workers", "8"])
    assert args.batch_size == 256 and args.num_workers == 8
    assert args.n_epochs == DEMO_DEFAULTS["base"]["n_epochs"]


def test_loader_workers_by_default_none_for_the_cache_on_a_cpu(tmp_path):
    args = parse_args(build_parser("base", ""), ["--accelerator", "cpu"])
    assert args.num_workers is None
    cache = object()  # any cache: only whether there is one matters
    assert loader_workers(args, cache) == 0  # reading the cache is cheap; workers take cores
    assert loader_workers(args, None) == min(8, available_cpus())  # wav files are decoded by workers
    args.num_workers = 1  # a given value wins
    assert loader_workers(args, cache) == 1
    args.num_workers, args.accelerator = None, "gpu"  # on an accelerator the workers overlap with it
    assert loader_workers(args, cache) == min(8, available_cpus())


def test_log_interval_about_five_times_an_epoch_and_at_least_every_50_steps():
    assert [log_interval(n) for n in (1, 4, 5, 12, 250, 251, 10000)] == [1, 1, 1, 2, 50, 50, 50]


def test_taking_a_run_returns_it_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_ID_ENV, raising=False)  # taking a run sets it for the processes it starts
    args = parse_args(build_parser("base", ""), ["--project_name", str(tmp_path / "p"), "--run_id", "abcd1234"])
    run = Stage(args, "base").take_run()
    assert (run.run_id, run.run_dir, run.resume_from, run.finished) == ("abcd1234", tmp_path / "p" / "abcd1234",
                                                                        None, None)
    assert not (tmp_path / "p").exists()  # the run is recorded by a step of its own


def test_demo_stage2_and_explicit_dirs():
    args = parse_args(build_parser("device", ""), ["--demo", "--demo_dir", "d", "--split_dir", "s", "--lr", "0.1"])
    assert args.n_epochs == DEMO_DEFAULTS["device"]["n_epochs"]
    assert args.batch_size == DEMO_DEFAULTS["device"]["batch_size"]
    assert args.lr == 0.1
    assert args.dataset_dir == "d" and args.split_dir == "s"


def test_no_demo_leaves_defaults():
    args = parse_args(build_parser("base", ""), ["--n_epochs", "3"])
    assert args.n_epochs == 3 and args.batch_size == 256 and args.dataset_dir is None
    assert args.split_dir == "split_setup"


# ------------------------------------------------------------------ the training step's memory format and its benchmark

def test_training_on_a_cpu_runs_channels_last_and_the_checkpoint_is_unchanged(tmp_path):
    import lightning as L

    from helpers.training.builder import build_module

    torch.manual_seed(0)
    args = parse_args(build_parser("base", ""), ["--demo", "--base_channels", "8", "--channels_multiplier", "1"])
    module = build_module(vars(args), input_sample_rate=32000)
    waveforms, labels = torch.randn(8, 32000), torch.randint(0, len(CLASSES), (8,))
    batch = (waveforms, labels, ["a"] * 8, [f"{i}.wav" for i in range(8)])
    batches = torch.utils.data.DataLoader([0], batch_size=1, collate_fn=lambda _: batch)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, batches)
    convolutions = [m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions)
    assert any(not c.weight.is_contiguous() for c in convolutions if c.kernel_size != (1, 1))  # not just 1x1
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    fresh = build_module(vars(args), input_sample_rate=32000)
    fresh.load_state_dict(state)
    module.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.allclose(module(waveforms), fresh(waveforms), atol=1e-5)


def test_the_benchmarks_training_step_trains():
    from pathlib import Path

    from test_usability import load_file
    benchmark = load_file(Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark.py", "benchmark")
    torch.manual_seed(0)
    args = parse_args(build_parser("base", ""), ["--demo", "--base_channels", "8", "--channels_multiplier", "1",
                                                 "--batch_size", "4"])
    labels = torch.randint(0, len(CLASSES), (8,))
    loop = benchmark.InMemoryLoop(args, torch.randn(8, 32000), labels, torch.device("cpu"))
    before = [p.detach().clone() for p in loop.module.model.parameters()]
    seconds = [loop.step(profile=True) for _ in range(2)]
    assert all(s > 0 for s in seconds)
    assert all(loop.parts[name] > 0 for name in loop.PARTS)
    assert sum(seconds) == pytest.approx(sum(loop.parts.values()), rel=1e-6)
    assert any(not torch.equal(a, p) for a, p in zip(before, loop.module.model.parameters()))
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)  # the layout Trainer.fit trains in
               for m in loop.module.model.modules() if isinstance(m, torch.nn.Conv2d))
