"""What a GPU machine relies on, checked on the CPU: the front end in float32 under autocast, QAT steps
that write nothing to the device, counting complexity without CUDA, ``--evaluate`` on the GPU, the
package's front ends moving with the model, and a wandb server out of reach not stopping a run. The
steps on fake CUDA tensors are in test_fake_cuda.py, two-process runs in test_distributed.py, the package's
front ends moving with its model in test_submission.py."""
import argparse
import time

import pytest
import torch
from conftest import TINY_NETWORK

from helpers.outputs import predictions
from helpers.outputs.complexity import model_complexity
from helpers.setup import loggers
from helpers.setup.flags import build_parser, parse_args
from models import quantization
from models.cp_mobile import Network, NetworkConfig
from models.frontend import LogMelFrontEnd
from models.quantization import prepare_qat, set_qat_frozen


def loud_clips() -> torch.Tensor:
    t = torch.arange(44100) / 44100
    hum = 0.5 * torch.sin(2 * torch.pi * 60 * t)  # a 60 Hz tone at amplitude 0.5
    brown = torch.cumsum(torch.randn(44100, generator=torch.Generator().manual_seed(0)), 0)
    brown = 0.1 * (brown - brown.mean()) / brown.std()  # brown noise at RMS 0.1
    return torch.stack([hum, brown])[:, None]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_front_end_computes_in_float32_under_autocast(dtype):
    frontend = LogMelFrontEnd()
    clips = loud_clips()
    expected = frontend(clips)
    assert frontend.spectrogram(clips).max() > 65504  # over what float16 can hold
    with torch.autocast("cpu", dtype=dtype):
        power, features = frontend.spectrogram(clips), frontend(clips)
    assert power.dtype == features.dtype == torch.float32
    assert torch.equal(features, expected)


def test_qat_steps_write_the_observer_state_only_when_it_changes(monkeypatch):
    model = prepare_qat(Network(NetworkConfig(base_channels=8))).train()
    writes = []
    for name in ("disable_observer", "enable_observer"):
        real = getattr(quantization, name)
        monkeypatch.setattr(quantization, name, lambda m, real=real, name=name: (writes.append(name), real(m)))
    n_quantizers = sum(isinstance(m, quantization.WeightFakeQuantize) for m in model.modules())
    for frozen in (False, False, True, True, True, False):
        set_qat_frozen(model, frozen)
    assert writes == ["disable_observer"] * n_quantizers + ["enable_observer"] * n_quantizers


def test_the_observer_state_survives_a_checkpoint():
    model = prepare_qat(Network(NetworkConfig(base_channels=8)))
    set_qat_frozen(model, True)
    fresh = prepare_qat(Network(NetworkConfig(base_channels=8)))
    fresh.load_state_dict(model.state_dict())
    quantizers = [m for m in fresh.modules() if isinstance(m, quantization.WeightFakeQuantize)]
    assert quantizers and not any(q.observing for q in quantizers)
    scale = quantizers[0].scale.clone()
    with torch.no_grad():
        fresh(torch.randn(2, 1, 256, 65) * 10)
    assert torch.equal(quantizers[0].scale, scale)  # frozen: the forward pass leaves the scales alone


def test_complexity_is_counted_on_the_cpu_where_a_gpu_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # torchinfo would move its copy there
    assert model_complexity(Network())["macs"] > 0


def test_evaluate_uses_the_gpu_unless_told_otherwise(monkeypatch):
    def device(accelerator, cuda):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        return predictions.evaluation_device(argparse.Namespace(accelerator=accelerator)).type
    assert [device("auto", True), device("gpu", True), device("cpu", True), device("auto", False)] == \
        ["cuda", "cuda", "cpu", "cpu"]


@pytest.mark.slow
def test_an_unreachable_wandb_server_leaves_the_run_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("WANDB_MODE", raising=False)
    args = parse_args(build_parser("base", ""), ["--wandb_init_timeout", "3", "--project_name", "p", *TINY_NETWORK])
    started = time.monotonic()
    logger, mode = loggers.make_logger(args, "unreach1")
    try:
        assert mode == "offline" and logger.experiment.settings.mode == "offline"
        logger.log_metrics({"x": 1.0})
    finally:
        loggers.close_logger(logger)
    assert time.monotonic() - started < 60
    out = capsys.readouterr().out
    assert "no answer from the server within 3 s" in out and "logs offline instead" in out
    assert "wandb sync wandb/offline-run-*-unreach1" in out
    assert list((tmp_path / "wandb").glob("offline-run-*-unreach1"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where there is no GPU")
def test_the_gpu_check_without_a_gpu_says_so_and_writes_nothing(tmp_path):
    import shutil
    import subprocess

    from conftest import REPO_ROOT
    copy = tmp_path / "repo"  # the script alone: it must stop before it sets anything up
    shutil.copytree(REPO_ROOT / "scripts", copy / "scripts")
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=copy, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 1 and "No CUDA GPU" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (copy / "gpu_report.md").exists() and not (copy / ".venv").exists()
    from benchmarks import gpu_report
    with pytest.raises(SystemExit, match="No CUDA GPU"):
        gpu_report.main(["--out", str(tmp_path / "report.md")])
    assert not (tmp_path / "report.md").exists()
    assert gpu_report.peak_of("NVIDIA H100 80GB HBM3") == (67, 495, 989) and gpu_report.peak_of("Tesla T4") is None
