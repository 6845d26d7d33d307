"""Distributed runs on the CPU: two processes (gloo), as ``--devices 2 --strategy ddp`` starts them on GPUs.
Each process must draw its own augmentations, reproducibly; ``--average_last`` must leave every process
with the same batch-norm statistics, those of all the data, saved as tested; DDP must not broadcast the
constant buffers every step nor warn about the gradients' memory layout; a loss that is not finite on
one process must stop both, not leave the other waiting; two processes that find no audio cache build it
once."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY_NETWORK

pytestmark = pytest.mark.slow

TRAINING = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    sys.path.insert(0, {repo!r})
    from torch.utils.data import DataLoader, DistributedSampler
    from helpers.setup.flags import build_parser, parse_args
    from helpers.setup.trainer import make_trainer, norm_statistics
    from helpers.training.builder import build_parts
    from helpers.training.module import SceneClassifier
    import lightning as L

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    nan_on_rank_1 = sys.argv[2] == "nan"
    args = parse_args(build_parser("base", ""), ["--n_epochs", "2", "--accelerator", "cpu", "--devices", "2",
                      "--strategy", "ddp", "--average_last", "2", "--seed", "3", "--warmup_steps", "1",
                      "--batch_size", "4", "--project_name", str(out / "runs"), *{tiny!r}])
    L.seed_everything(args.seed, verbose=False)

    class Clips(torch.utils.data.Dataset):
        def __len__(self):
            return 16
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return (0.1 + i / 16) * torch.randn(1, 44100, generator=g), i % 10, "abc"[i % 3], f"{{i}}.wav"

    class Module(SceneClassifier):
        def training_loss(self, batch):
            loss, parts = super().training_loss(batch)
            if nan_on_rank_1 and self.global_rank == 1 and self.global_step == 1:
                loss = loss * float("nan")
            return loss, parts

    class Record(L.Callback):
        def on_train_start(self, trainer, module):
            waveform = torch.ones(4, 1, 44100) * torch.linspace(-0.5, 0.5, 44100)
            features, _ = module.augment(waveform, ["a"] * 4, module.frontend)
            broadcast = list(trainer.strategy.model.named_module_buffers)
            self.start = {{"augmented": features.sum().item(), "broadcast": broadcast}}

    trainer = make_trainer(args, logger=False, run_id="ddp", enable_progress_bar=False)
    record = Record()
    trainer.callbacks.append(record)
    sampler = DistributedSampler(Clips(), trainer.world_size, trainer.global_rank, shuffle=True, seed=args.seed)
    module = Module(**build_parts(vars(args)), config=vars(args))
    try:
        trainer.fit(module, DataLoader(Clips(), batch_size=4, sampler=sampler))
    except Exception as err:
        print(f"rank {{trainer.global_rank}} stopped: {{type(err).__name__}}: {{err}}", flush=True)
        sys.exit(3)
    statistics = [s.tolist() for s in norm_statistics(module.model)]
    saved = torch.load(out / "runs" / "ddp" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    saved_statistics = [v.tolist() for k, v in saved.items() if k.endswith(("running_mean", "running_var"))]
    (out / f"rank{{trainer.global_rank}}.json").write_text(json.dumps(dict(
        record.start, statistics=statistics, saved=saved_statistics)))
""")


def run_two_processes(tmp_path: Path, mode: str = "fit", timeout: int = 240) -> subprocess.CompletedProcess:
    script = tmp_path / "ddp_run.py"
    script.write_text(TRAINING.format(repo=str(REPO_ROOT), tiny=TINY_NETWORK))
    env = dict(os.environ, PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, str(script), str(tmp_path), mode], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same seeded two-process run twice: ``[(process output, {rank: record}), ...]``."""
    runs = []
    for i in range(2):
        folder = tmp_path_factory.mktemp(f"ddp{i}")
        done = run_two_processes(folder)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs.append((done.stdout + done.stderr,
                     {rank: json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)}))
    return runs


def test_each_process_draws_its_own_augmentations_reproducibly(two_runs):
    (_, first), (_, second) = two_runs
    assert first[0]["augmented"] != first[1]["augmented"]
    assert [first[r]["augmented"] for r in (0, 1)] == [second[r]["augmented"] for r in (0, 1)]


def test_averaged_weights_have_the_same_statistics_on_every_process_as_saved(two_runs):
    _, records = two_runs[0]
    assert records[0]["statistics"] == records[1]["statistics"]
    assert records[0]["statistics"] == records[0]["saved"]
    assert records[0]["statistics"] and any(any(x != 0 for x in mean) for mean in records[0]["statistics"][::2])


def test_constant_buffers_are_not_broadcast_and_gradients_keep_their_layout(two_runs):
    output, records = two_runs[0]
    broadcast = records[0]["broadcast"]
    assert any(name.startswith("model.") and name.endswith("running_mean") for name in broadcast)
    assert not [name for name in broadcast if name.startswith(("frontend.", "augment."))]
    assert "Grad strides do not match bucket view strides" not in output


def test_a_non_finite_loss_on_one_process_stops_both(tmp_path):
    started = time.monotonic()
    done = run_two_processes(tmp_path, "nan", timeout=240)  # the old code waited for gloo's 30-minute timeout
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "rank 0 stopped: NonFiniteLossError: the training loss became NaN or infinite at step 1" in output
    assert "rank 1 stopped: NonFiniteLossError" in output
    assert time.monotonic() - started < 240
    assert not (tmp_path / "runs" / "ddp" / "checkpoints" / "last.ckpt").exists()  # no epoch finished cleanly


CACHE_BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    import torch
    from dataset.cache import AudioCache
    from dataset.dcase25 import resolve_dataset_dir, test_rows
    torch.set_num_threads(1)
    dataset_dir, cache_dir, go = resolve_dataset_dir(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    files = test_rows(dataset_dir, dataset_dir / "split_setup")["filename"].tolist()
    Path(sys.argv[3] + "." + sys.argv[4]).touch()  # ready: torch imported, waiting for the same moment as the other
    while not go.exists():
        time.sleep(0.01)
    cache = AudioCache.open_or_build(cache_dir, dataset_dir, files, 32000)
    print(cache.array_path.name)
""")


def test_two_processes_build_the_audio_cache_once(demo_dir, tmp_path):
    script = tmp_path / "build.py"
    script.write_text(CACHE_BUILD.format(repo=str(REPO_ROOT)))
    go = tmp_path / "go"
    command = [sys.executable, str(script), str(demo_dir), str(tmp_path / "cache"), str(go)]
    processes = [subprocess.Popen([*command, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    deadline = time.monotonic() + 120
    while not all(Path(f"{go}.{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # both wait: they ask for the cache at the same moment
    outputs = [p.communicate(timeout=240) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    caching = [stderr.count("Caching audio") > 0 for _, stderr in outputs]
    assert sorted(caching) == [False, True], outputs  # one built it, the other waited and found it
    names = {stdout.split()[-1] for stdout, _ in outputs}
    assert len(names) == 1 and len(list((tmp_path / "cache").glob("*.npy"))) == 1
    manifest = next((tmp_path / "cache").glob("*.json"))
    assert json.loads(manifest.read_text())["files"]
    assert not list((tmp_path / "cache").glob(".*.tmp"))
