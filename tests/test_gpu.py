"""The GPU tier (marker ``gpu``): the whole chain and the GPU-only risks on a real CUDA GPU, in a few
minutes. Skipped where there is none (CI, a laptop); run it with ``bash scripts/test.sh -m gpu`` or, with
the benchmark and a report, ``bash scripts/gpu_check.sh``.

Both stages, ``--evaluate`` and the export at 32, 16-mixed and bf16-mixed precision; a step of a loud clip
at 16-mixed with a finite loss; training steps with the default flags that never wait for the GPU
(``torch.cuda.set_sync_debug_mode("error")``); QAT; teacher + DIR + mixup; the package's
``predict(use_cuda=True)`` against the CPU; a PaSST teacher step at batch 80 with its peak memory; DDP with
two processes where two GPUs exist."""
import importlib
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, TINY_NETWORK

import export_submission
import train_base
import train_device_specific
from dataset.demo import write_demo_impulse_responses
from helpers.setup.flags import build_parser, parse_args
from helpers.training.builder import build_module
from helpers.training.module import SceneClassifier
from helpers.training.teacher_file import TeacherLogits

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

FLAGS = ["--demo", "--n_epochs", "1", "--batch_size", "32", "--num_workers", "2", "--warmup_steps", "1",
         "--check_val_every_n_epoch", "1", "--wandb_mode", "disabled", "--accelerator", "gpu", "--devices", "1"]


@pytest.fixture
def in_workdir(workdir_factory, monkeypatch):
    root = workdir_factory("gpu")
    monkeypatch.chdir(root)
    return root


def finite_results(results: dict) -> bool:
    return all(value == value for row in results.values() for value in row.values() if isinstance(value, float))


@pytest.mark.parametrize("precision", ["32", "16-mixed", "bf16-mixed"])
def test_both_stages_evaluate_and_export(precision, in_workdir):
    flags = [*FLAGS, "--precision", precision]
    general, results = train_base.main(["--seed", "1", *flags])
    assert results["acc"] == results["acc"]  # not NaN
    system, results = train_device_specific.main(["--ckpt_id", general, "--train_devices", "a", "b", *flags])
    assert finite_results(results)
    out_csv = train_device_specific.main(["--ckpt_id", system, "--evaluate", "--eval_dir", "demo_data/eval", *flags])
    assert len(pd.read_csv(out_csv, sep="\t")) == 10
    package = export_submission.main(["--ckpt_id", system, "--submission_name", "Gpu_TEST_task1",
                                      "--submission_index", "1", "--project_name", "DCASE25_Task1"])
    assert (package / "Gpu_TEST_task1" / "Gpu_TEST_task1_1.py").is_file()


def module_on_gpu(*argv, teacher=None) -> SceneClassifier:
    args = parse_args(build_parser("base", ""), list(argv))
    module = build_module(vars(args)).cuda().train()
    module.teacher = teacher
    return module


def batch(size=32, loudness=0.1):
    waveform = (loudness * torch.randn(size, 1, 44100)).pin_memory().cuda(non_blocking=True)
    labels = (torch.arange(size) % 10).cuda()
    return waveform, labels, ["a", "b", "c", "s1"] * (size // 4), [f"audio/{i}.wav" for i in range(size)]


def test_a_loud_clip_at_16_mixed_has_a_finite_loss():
    module = module_on_gpu()
    t = torch.arange(44100, device="cuda") / 44100
    waveform, labels, devices, names = batch(8)
    waveform = (0.5 * torch.sin(2 * torch.pi * 60 * t)).expand_as(waveform).contiguous()  # mel power > 65,504
    with torch.autocast("cuda", dtype=torch.float16):
        assert module.frontend.spectrogram(waveform).dtype == torch.float32
        loss, _ = module.training_loss((waveform, labels, devices, names))
    assert torch.isfinite(loss)


def steps_without_sync(module, n=3):
    """A warm-up step (first allocations, kernels chosen), then ``n`` steps in which any wait for the GPU
    raises; the last loss."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    data = [batch() for _ in range(n + 1)]
    module.prepare_to_fit(torch.device("cuda"))

    def step(data):
        loss, _ = module.training_loss(data)
        module.record_nonfinite(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    step(data[0])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for one in data[1:]:
            loss = step(one)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return loss


def test_training_steps_with_the_default_flags_never_wait_for_the_gpu():
    assert torch.isfinite(steps_without_sync(module_on_gpu()))


def test_qat_teacher_dir_and_mixup_steps(tmp_path):
    responses = write_demo_impulse_responses(tmp_path / "irs", count=3)
    names = [f"audio/{i}.wav" for i in range(32)]
    teacher = TeacherLogits(names, torch.randn(32, 10))
    module = module_on_gpu("--dir_p", "0.6", "--dir_dir", str(responses), "--mixup_alpha", "0.3", teacher=teacher)
    assert torch.isfinite(steps_without_sync(module))
    assert torch.isfinite(steps_without_sync(module_on_gpu("--quantize", "int8")))


def test_qat_run_on_the_gpu(in_workdir):
    _, results = train_base.main([*FLAGS, "--quantize", "int8", *TINY_NETWORK])
    assert results["acc"] == results["acc"]


def test_the_package_predicts_the_same_classes_on_the_gpu_as_on_the_cpu(in_workdir):
    general, _ = train_base.main(["--seed", "2", *FLAGS])
    system, _ = train_device_specific.main(["--ckpt_id", general, "--train_devices", "a", *FLAGS])
    package = export_submission.main(["--ckpt_id", system, "--submission_name", "Cuda_TEST_task1",
                                      "--submission_index", "1"])
    sys.path.insert(0, str(package))
    try:
        api = importlib.import_module("Cuda_TEST_task1.Cuda_TEST_task1_1")
    finally:
        sys.path.remove(str(package))
    data = in_workdir / "demo_data"
    rows = pd.read_csv(data / "split_setup" / "test.csv", sep="\t").merge(pd.read_csv(data / "meta.csv", sep="\t"))
    files, devices = [str(data / f) for f in rows["filename"]], rows["source_label"].tolist()
    on_gpu, _ = api.predict(files, devices, use_cuda=True)
    on_cpu, _ = api.predict(files, devices, use_cuda=False)
    same = (torch.stack(on_gpu).argmax(1) == torch.stack(on_cpu).argmax(1)).float().mean().item()
    assert same >= 0.995, f"{same:.1%} of the classes agree"


def test_a_passt_teacher_step_at_batch_80(capsys):
    pytest.importorskip("hear21passt")
    module = module_on_gpu("--model", "passt", "--pretrained", "none")
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5)
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = module.training_loss(batch(80))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    with capsys.disabled():
        print(f"\nPaSST step at batch 80 (bf16-mixed): peak GPU memory "
              f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP needs two GPUs")
def test_ddp_on_two_gpus(in_workdir):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "train_base.py"), *FLAGS[:-2], "--devices", "2",
                           "--strategy", "ddp", "--average_last", "2", "--n_epochs", "2", "--seed", "1"],
                          cwd=in_workdir, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Run id:" in done.stdout
