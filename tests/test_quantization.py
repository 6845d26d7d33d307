"""8-bit students (models/quantization.py): int8 weights, honest complexity, quantisation-aware training,
resuming, and the exported 8-bit package (its predictions and its complexity check)."""
import copy
import json
import os
import shutil

import lightning as L
import pandas as pd
import pytest
import torch
import torchinfo
from test_reliability import SMALL, interrupt_when, steps_per_epoch
from test_submission import run, run_scripts
from torch import nn
from torch.utils.data import DataLoader

import train_base
from dataset.audio import load_audio
from helpers.outputs.complexity import MAX_MACS, MAX_PARAM_BYTES, model_complexity
from helpers.outputs.submission import export_submission
from helpers.setup.checkpoints import CheckpointError
from helpers.setup.flags import build_parser, parse_args
from helpers.setup.model_loader import load_general_model, read_device_system
from helpers.training.builder import build_module
from models.cp_mobile import Network, NetworkConfig
from models.inference import store_for_submission
from models.multi_device import MultiDeviceModel
from models.quantization import (
    ChannelAffine,
    Int8Conv2d,
    int8_codes,
    is_qat,
    prepare_qat,
    quantize_to_int8,
    set_qat_frozen,
)
from models.registry import network_record

# the baseline's width (its byte counts are asserted) on the small front end of the others
BASELINE_WIDTH = [flag for i, flag in enumerate(SMALL) if "--base_channels" not in SMALL[max(0, i - 1):i + 1]]

# the organisers' complexity check: bytes per stored number by dtype
ORGANISERS_DTYPE_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1, torch.uint8: 1,
                          torch.qint8: 1, torch.quint8: 1, torch.int32: 4}
DEVICES = ["a", "b", "c", "s1", "s2", "s3"]
LABEL = "Eight_BIT_task1"


def network_of(flags):
    return Network(NetworkConfig.from_args(parse_args(build_parser("base", ""), flags)))


def perturb_(model, seed):
    """Non-trivial weights and batch-norm statistics (negative scales too), a stand-in for training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.add_(0.2 * torch.randn(b.shape, generator=generator))
            elif name.endswith("running_var"):
                b.mul_(0.5 + torch.rand(b.shape, generator=generator))
    return model


def test_int8_weights_reproduce_float_weights_within_half_a_step():
    qat = prepare_qat(perturb_(Network(), 0)).eval()
    pairs = [(m[0], m[1]) for m in qat.modules() if isinstance(m, nn.Sequential) and len(m) > 1
             and isinstance(m[1], nn.BatchNorm2d)]
    assert len(pairs) == 21  # every conv-norm unit and the head
    for conv, _ in pairs:
        codes, scale = int8_codes(conv)
        step = scale.view(-1, 1, 1, 1)
        assert codes.dtype == torch.int8 and codes.abs().max() <= 127
        assert ((codes.float() * step - conv.weight).abs() <= step / 2 + 1e-7).all()
        assert (codes.abs().amax(dim=(1, 2, 3)) == 127).all()  # the largest weight of a channel uses the range

    # the int8 model: each effective weight (code x 16-bit per-channel scale) within half a step of the
    # float weight folded with its batch norm, plus the 16-bit rounding of the scale (2^-11 of the
    # value, a per-channel gain error), and the same outputs as the QAT model
    x = torch.randn(3, 1, 256, 65)
    with torch.no_grad():
        expected = qat(x)
    int8 = quantize_to_int8(copy.deepcopy(qat)).half()
    stored = dict(int8.named_modules())
    for name, module in qat.named_modules():
        if isinstance(module, nn.Sequential) and len(module) > 1 and isinstance(module[1], nn.BatchNorm2d):
            conv, affine = stored[name][0], stored[name][1]
            assert isinstance(conv, Int8Conv2d) and isinstance(affine, ChannelAffine)
            assert conv.weight.dtype == torch.int8 and affine.weight.dtype == torch.float16
            norm = module[1]
            factor = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).detach().view(-1, 1, 1, 1)
            folded = module[0].weight.detach() * factor
            step = affine.weight.float().abs().view(-1, 1, 1, 1)
            error = (conv.weight.float() * affine.weight.float().view(-1, 1, 1, 1) - folded).abs()
            rounding = conv.weight.float().abs() * step * 2 ** -11
            assert (error <= step / 2 + rounding + 1e-6).all(), name
    with torch.no_grad():
        got = copy.deepcopy(int8).float()(x)
    assert torch.allclose(got, expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())
    assert torch.equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("flags", [["--quantize", "int8"], ["--student", "big8"]])
def test_complexity_counts_every_stored_number_at_its_width(flags):
    args = parse_args(build_parser("base", ""), flags)
    assert args.quantize == "int8"
    float_network = Network(NetworkConfig.from_args(args))
    module = build_module(vars(args))
    assert is_qat(module.model)
    complexity = model_complexity(module.model)

    # the organisers' way: their dtype table over parameters() of the stored model, MACs with torchinfo
    # on a float copy
    stored = store_for_submission(copy.deepcopy(module.model)).half()
    dtypes = {p.dtype for p in stored.parameters()}
    assert dtypes == {torch.int8, torch.float16}
    organisers_bytes = sum(p.numel() * ORGANISERS_DTYPE_BYTES[p.dtype] for p in stored.parameters())
    organisers = torchinfo.summary(copy.deepcopy(stored).float(), input_size=(1, 1, 256, 65), verbose=0)
    assert complexity["param_bytes"] == organisers_bytes
    assert complexity["macs"] == organisers.total_mult_adds

    # the same figures from the float network: one byte per conv weight, two 16-bit numbers per channel
    # (scale x batch-norm factor, shift) in place of batch norm's two parameters; same MACs and count
    reference = torchinfo.summary(float_network, input_size=(1, 1, 256, 65), verbose=0)
    conv_weights = sum(m.weight.numel() for m in float_network.modules() if isinstance(m, nn.Conv2d))
    norm_params = sum(p.numel() for m in float_network.modules() if isinstance(m, nn.BatchNorm2d)
                      for p in m.parameters())
    assert complexity["params"] == reference.total_params == conv_weights + norm_params
    assert complexity["macs"] == reference.total_mult_adds
    assert complexity["param_bytes"] == conv_weights + 2 * norm_params
    assert complexity["bytes_by_dtype"] == {"int8": conv_weights, "float16": 2 * norm_params}
    if "big8" in flags:  # the preset: more than 64,000 parameters (too many for 16 bits), within the limits
        assert complexity["params"] > 64_000 and 2 * complexity["params"] > MAX_PARAM_BYTES
        assert complexity["param_bytes"] <= MAX_PARAM_BYTES and complexity["macs"] <= MAX_MACS
    else:  # the baseline keeps its published figures
        assert (complexity["params"], complexity["macs"]) == (61_148, 29_419_156)
    # a float model is still counted at 16 bits
    assert model_complexity(float_network)["param_bytes"] == 2 * reference.total_params


def test_student_preset_expands_to_width_flags_and_explicit_flags_win():
    args = parse_args(build_parser("device", ""), ["--student", "big8"])
    assert (args.base_channels, args.channels_multiplier, args.expansion_rate, args.quantize) == (24, 3.0, 1.9, "int8")
    args = parse_args(build_parser("base", ""), ["--student", "big8", "--expansion_rate", "1.5", "--demo"])
    assert (args.base_channels, args.expansion_rate, args.n_epochs) == (24, 1.5, 12)
    assert parse_args(build_parser("base", ""), []).quantize is None  # default: today's 16-bit system


@pytest.mark.slow
def test_stage1_starts_from_a_float_or_an_8bit_checkpoint(tmp_path):
    float_model = perturb_(Network(), 3)
    float_ckpt = tmp_path / "float.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in float_model.state_dict().items()}}, float_ckpt)
    qat, trained_8bit = load_general_model(float_ckpt, quantize="int8")
    assert not trained_8bit and is_qat(qat)
    conv = qat.in_c[1][0]
    assert torch.equal(conv.weight, float_model.in_c[1][0].weight)  # QAT goes on from the float weights
    assert torch.allclose(conv.weight_fake_quant.scale, conv.weight.abs().amax(dim=(1, 2, 3)) / 127)

    qat_ckpt = tmp_path / "qat.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in qat.state_dict().items()},
                "hyper_parameters": {"quantize": "int8"}}, qat_ckpt)
    again, trained_8bit = load_general_model(qat_ckpt, quantize="int8")
    assert trained_8bit and all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                                   qat.state_dict().values()))
    # the checkpoint alone says it is 8-bit: without --quantize it stays 8-bit
    alone, trained_8bit = load_general_model(qat_ckpt)
    assert trained_8bit and is_qat(alone)
    assert network_record(alone) == {"name": "cp_mobile", "config": network_record(float_model)["config"],
                                     "quantize": "int8"}
    with pytest.raises(CheckpointError, match="base_channels"):  # network flags given must agree
        load_general_model(qat_ckpt, {"base_channels": 24})


class TinyClips(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        generator = torch.Generator().manual_seed(i)
        return 0.1 * torch.randn(1, 8000, generator=generator), i % 10, "a", f"{i}.wav"


class Snapshots(L.Callback):
    """Batch-norm statistics and quantisation scales at the end of every training epoch."""

    def __init__(self):
        self.states = []

    def on_train_epoch_end(self, trainer, module):
        self.states.append({k: v.clone() for k, v in module.model.state_dict().items()
                            if k.endswith(("running_mean", "running_var", "weight_fake_quant.scale"))})


@pytest.mark.slow
def test_qat_freezes_for_the_last_epochs_and_tests_the_int8_model(tmp_path):
    args = parse_args(build_parser("base", ""), ["--quantize", "int8", "--n_epochs", "3", "--qat_freeze_epochs", "1",
                                                 "--warmup_steps", "1", "--orig_sample_rate", "8000",
                                                 "--sample_rate", "8000", "--n_fft", "512", "--window_length",
                                                 "400", "--hop_length", "160", "--n_mels", "64", "--freqm", "8"])
    module = build_module(vars(args))
    snapshots = Snapshots()
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[snapshots], accelerator="cpu",
                        default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(TinyClips(), batch_size=4))
    first, second, last = snapshots.states
    # epochs 1 and 2 update scales and statistics; the frozen last epoch leaves them as they were
    assert any(not torch.equal(first[k], second[k]) for k in first if k.endswith("running_mean"))
    assert any(not torch.equal(first[k], second[k]) for k in first if k.endswith("scale"))
    assert all(torch.equal(second[k], last[k]) for k in second)
    assert all(not m.weight_fake_quant.observer_enabled.item() for m in module.model.modules() if hasattr(
        m, "weight_fake_quant"))
    # releasing the freeze (e.g. stage 2 starting from this model) turns the observers back on
    released = copy.deepcopy(module.model).train()
    set_qat_frozen(released, False)
    assert all(m.weight_fake_quant.observer_enabled.item() for m in released.modules()
               if hasattr(m, "weight_fake_quant"))
    assert all(m.training for m in released.modules() if isinstance(m, nn.BatchNorm2d))

    qat = copy.deepcopy(module.model).eval()
    trainer.test(module, DataLoader(TinyClips(), batch_size=4), verbose=False)
    int8_weights = [p for p in module.model.parameters() if p.dtype == torch.int8]
    assert len(int8_weights) == 21 and not is_qat(module.model)  # the final test ran the int8 model
    features = module.frontend(torch.stack([TinyClips()[i][0] for i in range(8)]))
    with torch.no_grad():
        assert torch.allclose(module.model(features.half().float()), qat(features.half().float()), atol=1e-2)


@pytest.fixture(scope="module")
def workdir(workdir_factory):
    return workdir_factory("quantization")


@pytest.mark.slow
def test_8bit_run_resumes_and_ends_with_the_int8_figures(workdir, monkeypatch, capsys):
    args = [*BASELINE_WIDTH, "--project_name", "Q8", "--run_id", "q8stop", "--n_epochs", "8", "--quantize", "int8",
            "--qat_freeze_epochs", "1"]
    last = workdir / "Q8" / "q8stop" / "checkpoints" / "last.ckpt"
    code, output = interrupt_when("train_base.py", args, workdir, last.is_file)
    assert code != 0 and "--resume q8stop" in output
    assert "63,856 bytes of parameters as stored (int8 58,440 + float16 5,416)" in output
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < stopped_at < 8 * steps_per_epoch(workdir)

    resume = [*BASELINE_WIDTH, "--project_name", "Q8", "--resume", "q8stop", "--n_epochs", "8", "--quantize", "int8",
              "--qat_freeze_epochs", "1"]
    monkeypatch.chdir(workdir)  # resumed in this process, for the suite's time (test_reliability resumes in its own)
    train_base.main(resume)
    out = capsys.readouterr().out
    assert "Continuing run q8stop" in out and "Run id: q8stop" in out
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["network"]["quantize"] == "int8"  # recorded: stage 2 needs no --quantize
    assert checkpoint["global_step"] == 8 * steps_per_epoch(workdir)
    observers = [v for k, v in checkpoint["state_dict"].items() if k.endswith("observer_enabled")]
    assert len(observers) == 21 and not any(v.item() for v in observers)  # frozen in the last epoch
    results = json.loads((workdir / "Q8" / "q8stop" / "results.json").read_text())
    assert results["complexity"]["general"]["param_bytes"] == 63_856
    assert results["complexity"]["general"]["bytes_by_dtype"] == {"int8": 58_440, "float16": 5_416}
    assert results["results"]["General Model"]["count"] > 0

    # stage 2, --evaluate and the export rebuild the 8-bit model from the checkpoint alone
    system, _, _ = read_device_system(last, "Q8")
    assert is_qat(system.base_model)
    assert torch.equal(system.base_model.state_dict()["in_c.0.0.weight"],
                       checkpoint["state_dict"]["model.in_c.0.0.weight"])


def save_8bit_stage2_run(root, run_id, flags):
    """A stage-2 checkpoint of an 8-bit system, as train_device_specific.py writes it: quantisation-aware
    device models with distinct weights and statistics."""
    args = parse_args(build_parser("device", ""), ["--demo", "--demo_dir", str(root / "demo_data"), *flags])
    config = vars(args)
    system = MultiDeviceModel(perturb_(Network(NetworkConfig.from_args(args)), 0), DEVICES)
    for i, device in enumerate(DEVICES):
        perturb_(system.device_models[device], i + 1)
    prepare_qat(system)  # scales from each model's own weights
    path = root / "DCASE25_Task1" / run_id / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": build_module(config, model=system).state_dict(), "hyper_parameters": config}, path)
    return config, system, path


@pytest.fixture(scope="module")
def package(workdir, package_python):
    """Index 1: the big8 preset (8-bit); index 2: an 8-bit model over the limits; installed with pip,
    offline, into a fresh virtual environment that cannot see the repository."""
    config, system, ckpt = save_8bit_stage2_run(workdir, "big8", ["--student", "big8"])
    _, _, too_big = save_8bit_stage2_run(workdir, "over", ["--student", "big8", "--base_channels", "48"])
    export_submission(ckpt, LABEL, 1, workdir / "submissions")
    export_submission(too_big, LABEL, 2, workdir / "submissions", check_limits=False)
    folder = workdir / "submissions" / LABEL
    python = package_python
    shutil.copytree(folder, workdir / "build_copy")
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         workdir / "build_copy"], cwd=workdir)
    outside = workdir / "outside"
    outside.mkdir()
    for script in ("test_complexity.py",):
        shutil.copy(folder / script, outside / script)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {"config": config, "system": system, "ckpt": ckpt, "folder": folder, "python": python,
            "cwd": outside, "env": env}


PREDICT = r"""
import importlib, json, sys
import torch
api = importlib.import_module("{label}.{label}_1")
files, devices, ckpt = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
logits, classes = api.predict(files, devices, use_cuda=False)
from_training, _ = api.predict(files, devices, model_file_path=ckpt, use_cuda=False)
model = api.load_model()
torch.save({{"logits": torch.stack(logits), "from_training": torch.stack(from_training)}}, "predicted.pt")
print(json.dumps(sorted({{str(p.dtype) for p in api.get_model_for_device(model, "a").parameters()}})))
"""


@pytest.mark.slow
def test_exported_8bit_package_predicts_as_the_final_test(workdir, package):
    state = torch.load(package["folder"] / LABEL / "ckpts" / f"{LABEL}_1.pt", weights_only=True)["state_dict"]
    assert state["device_models.a.in_c.0.0.weight"].dtype == torch.int8
    assert {v.dtype for k, v in state.items() if not k.endswith(".0.weight")} == {torch.float16}
    meta = pd.read_csv(workdir / "demo_data" / "meta.csv", sep="\t")
    test = pd.read_csv(workdir / "demo_data" / "split_setup" / "test.csv", sep="\t")[["filename"]].merge(meta)
    picked = test.groupby("source_label").head(2)
    files = [str(workdir / "demo_data" / f) for f in picked["filename"]] + [str(workdir / "demo_data" /
                                                                             picked["filename"].iloc[0])]
    devices = picked["source_label"].tolist() + ["unknown"]
    result = run([package["python"], "-c", PREDICT.format(label=LABEL), json.dumps(files), json.dumps(devices),
                  package["ckpt"]], cwd=package["cwd"], env=package["env"])
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["torch.float16", "torch.int8"]
    predicted = torch.load(package["cwd"] / "predicted.pt")

    # the final test of train_device_specific.py: the int8 system through SceneClassifier.inference_logits
    module = build_module(package["config"], model=package["system"]).eval()
    store_for_submission(package["system"])
    assert not is_qat(package["system"])
    reference = module.inference_logits(torch.stack([load_audio(f)[0] for f in files]), devices)
    assert torch.equal(predicted["logits"].argmax(1), reference.argmax(1))
    # float32 sums round by the thread count (this process may run one thread, the package's all cores) and
    # the CPU's kernels, and the perturbed network's logits reach 1e6-1e7 (one and two threads differed by
    # 1.0 on logits of 1e7): a tolerance by their scale
    difference = (predicted["logits"] - reference).abs().max()
    assert difference <= 1e-5 * reference.abs().max(), difference
    # the package also reads the training checkpoint itself and makes the same int8 model of it
    assert torch.equal(predicted["from_training"], predicted["logits"])


@pytest.mark.slow
def test_complexity_check_of_the_8bit_package(package):
    ok, too_big = run_scripts(package["python"], [
        ("test_complexity.py", ["--submission_name", LABEL, "--submission_index", index]) for index in "12"],
        cwd=package["cwd"], env=package["env"])
    assert ok.returncode == 0, ok.stderr[-3000:]
    expected = model_complexity(build_module(package["config"]).model)
    assert f"{expected['macs']:,}" in ok.stdout and f"{expected['param_bytes']:,}" in ok.stdout
    report = json.loads((package["cwd"] / "predictions" / f"{LABEL}_1" / "complexity.json").read_text())
    assert report["within_limits"] and set(report["models"]) == set(DEVICES) | {"general"}
    assert {(c["MACs"], c["Params"]) for c in report["models"].values()} == {(expected["macs"],
                                                                             expected["param_bytes"])}
    assert too_big.returncode == 1 and "exceeds the complexity limits" in too_big.stderr
    assert json.loads((package["cwd"] / "predictions" / f"{LABEL}_2" / "complexity.json").read_text())[
        "max_MACs"] > MAX_MACS
