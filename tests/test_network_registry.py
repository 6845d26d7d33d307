"""Networks by name: the registry and its flags, CP-ResNet, checkpoints that rebuild their network,
and a new network added as docs/networks.md, "Adding a network", says, trained, exported and run."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import train_base
import train_device_specific
from helpers.outputs.complexity import model_complexity
from helpers.outputs.package_files import carried_modules
from helpers.outputs.submission import ExportError, export_submission
from helpers.setup.checkpoints import CheckpointError
from helpers.setup.flags import build_parser, parse_args
from helpers.setup.model_loader import read_system
from helpers.setup.network_flags import written_network_flags
from helpers.training.builder import build_module
from models.cp_mobile import Network
from models.cp_resnet import CPResNet, CPResNetConfig, kernel_sizes
from models.multi_device import MultiDeviceModel
from models.registry import build_network, network_record, networks

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n_epochs", "1", "--batch_size", "16", "--num_workers", "0", "--warmup_steps", "2",
        "--check_val_every_n_epoch", "2", "--wandb_mode", "disabled"]  # one epoch, no validation


def run(cmd, cwd, env=None):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


# --- the registry and the flags ---

def test_cp_mobile_is_the_default_and_unchanged():
    args = parse_args(build_parser("base", ""), [])
    assert args.model == "cp_mobile"
    assert (args.base_channels, args.channels_multiplier, args.expansion_rate) == (32, 1.8, 2.1)
    model = build_module(vars(args)).model
    assert model_complexity(model) == {"macs": 29_419_156, "params": 61_148, "param_bytes": 122_296,
                                       "bytes_by_dtype": {"float16": 122_296}}
    assert list(model.state_dict()) == list(Network().state_dict())  # the organisers' names


def test_shared_flags_have_per_network_defaults_and_foreign_flags_are_refused(capsys):
    assert {"cp_mobile", "cp_resnet"} <= set(networks())
    resnet = parse_args(build_parser("base", ""), ["--model", "cp_resnet"])
    assert (resnet.channels_multiplier, resnet.base_channels, resnet.rho) == (2.0, 32, 4)
    assert tuple(resnet.n_blocks) == (2, 1, 1)
    assert not hasattr(resnet, "expansion_rate")
    narrow = parse_args(build_parser("base", ""), ["--model", "cp_resnet", "--base_channels", "8", "--n_blocks", "1",
                                                   "1", "1", "--rho", "1"])
    assert network_record(build_module(vars(narrow)).model) == {
        "name": "cp_resnet", "config": {"n_classes": 10, "in_channels": 1, "base_channels": 8,
                                        "channels_multiplier": 2.0, "n_blocks": (1, 1, 1), "rho": 1,
                                        "pool_after": (1, 2)}}
    with pytest.raises(SystemExit):
        parse_args(build_parser("base", ""), ["--rho", "3"])  # a CP-ResNet flag, CP-Mobile chosen
    assert "--rho is a flag of cp_resnet, not of --model cp_mobile" in capsys.readouterr().err
    assert "[cp_mobile=1.8, cp_resnet=2.0]" in " ".join(build_parser("base", "").format_help().split())
    # stage 2 takes the network from its checkpoint: no network settings until then
    stage2 = parse_args(build_parser("device", ""), [])
    assert not hasattr(stage2, "model") and not hasattr(stage2, "base_channels")


# --- CP-ResNet ---

def test_cp_resnet_at_the_2023_teachers_settings():
    model = CPResNet(CPResNetConfig(base_channels=32, channels_multiplier=2, n_blocks=(2, 1, 1), rho=4))
    assert model_complexity(model)["params"] == 122_356
    assert model(torch.randn(3, 1, 256, 65)).shape == (3, 10)
    assert {m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)} == {32, 64, 128, 10}


def test_kernel_rule_is_the_authors_for_four_blocks_per_stage():
    # the k1s/k2s of the authors' get_model for 4 blocks per stage, at their default rho 7 and at rho 5
    authors = {7: [(3, 1), (3, 3), (3, 3), (3, 3), (3, 1)] + [(1, 1)] * 7,
               5: [(3, 1), (3, 3), (3, 3), (3, 1)] + [(1, 1)] * 8}
    for rho, kernels in authors.items():
        assert kernel_sizes((4, 4, 4), rho) == kernels


def measured_receptive_field(model) -> int:
    """Mel bins whose change alters the central position of the last feature map (positive weights and
    inputs, so that every path inside the receptive field is open and max-pooling passes a raised value)."""
    model = model.double().eval()  # float64: rounding far below the smallest real change
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.01)
        x = torch.rand(1, 1, 256, 65, dtype=torch.float64) + 0.1
        bumped = x.repeat(256, 1, 1, 1)
        bumped[torch.arange(256), 0, torch.arange(256), :] += 1000.0  # row r raised in batch item r
        features = model.stages(model.in_c(torch.cat([x, bumped])))
        centre = features[:, :, features.shape[2] // 2, features.shape[3] // 2].sum(dim=1)
        # outside the receptive field only rounding differs (fast convolutions mix a tile's inputs)
        return int(((centre[1:] - centre[0]).abs() > 1e-9 * centre[0].abs()).sum())


def test_rho_sets_the_receptive_field():
    fields = {rho: CPResNet(CPResNetConfig(base_channels=4, rho=rho)).receptive_field() for rho in range(7)}
    assert all(fields[rho] < fields[rho + 1] for rho in range(6))  # each rho adds a 3x3 convolution
    for rho in (1, 4):
        model = CPResNet(CPResNetConfig(base_channels=4, rho=rho))
        assert measured_receptive_field(model) == model.receptive_field() == fields[rho]


# --- checkpoints that rebuild their network ---

@pytest.mark.slow
def test_cp_resnet_through_stage_2_evaluate_and_export(demo_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = ["--demo", "--demo_dir", str(demo_dir)]
    stage1, _ = train_base.main([*data, "--model", "cp_resnet", "--base_channels", "8", "--rho", "2", "--seed", "1",
                                 *TINY])
    stage1_ckpt = torch.load(tmp_path / "DCASE25_Task1" / stage1 / "checkpoints" / "last.ckpt", weights_only=False)
    record = {"name": "cp_resnet", "config": {"n_classes": 10, "in_channels": 1, "base_channels": 8,
                                              "channels_multiplier": 2.0, "n_blocks": (2, 1, 1), "rho": 2,
                                              "pool_after": (1, 2)}}
    assert stage1_ckpt["network"] == record

    # stage 2 gets no network flag: the network comes from the checkpoint; a disagreeing flag is refused
    with pytest.raises(CheckpointError, match="--rho 3 given here, the checkpoint's network has 2"):
        train_device_specific.main([*data, "--ckpt_id", stage1, "--rho", "3", *TINY])
    stage2, _ = train_device_specific.main([*data, "--ckpt_id", stage1, "--train_devices", "a", "b", *TINY])
    container = torch.load(tmp_path / "DCASE25_Task1" / stage2 / "checkpoints" / "last.ckpt", weights_only=True)
    assert container["network"] == record and container["hyper_parameters"]["model"] == "cp_resnet"
    assert container["hyper_parameters"]["rho"] == 2
    state = {k[len("model."):]: v for k, v in container["state_dict"].items()}
    assert "device_models.b.stages.stage1.block2.conv2.weight" in state

    # --evaluate: predictions, and the network in info.json and model_state_dict.pt
    train_device_specific.main([*data, "--ckpt_id", stage2, "--evaluate", "--eval_dir", str(demo_dir / "eval"),
                                "--num_workers", "0"])
    folder = tmp_path / "predictions" / stage2
    assert json.loads((folder / "info.json").read_text())["network"] == json.loads(json.dumps(record))
    saved = torch.load(folder / "model_state_dict.pt", weights_only=True)
    assert saved["network"] == record
    system = MultiDeviceModel(build_network("cp_resnet", saved["network"]["config"]), ["a", "b"])
    system.load_state_dict(saved["state_dict"], strict=True)
    assert len(pd.read_csv(folder / "output.csv", sep="\t")) == len(pd.read_csv(demo_dir / "eval" / "evaluation_setup" /
                                                                                  "fold1_test.csv", sep="\t"))

    # the export carries models/ (CP-ResNet's code with it) and the run's settings
    package = export_submission(stage2, "Test_TEST_task1", 1, tmp_path / "submissions")
    settings = json.loads((package / "Test_TEST_task1" / "ckpts" / "Test_TEST_task1_1.json").read_text())
    assert settings["network"] == json.loads(json.dumps(record))
    assert (package / "Test_TEST_task1" / "models" / "cp_resnet.py").is_file()


def test_teachers_over_the_limits_are_not_exported(tmp_path):
    teacher = CPResNet()  # the 2023 width: 86 million MACs
    path = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in teacher.state_dict().items()},
                "hyper_parameters": {"model": "cp_resnet"}, "network": network_record(teacher)}, path)
    with pytest.raises(ExportError, match="exceed the complexity limits"):
        export_submission(path, "Test_TEST_task1", 1, tmp_path / "submissions")
    assert not (tmp_path / "submissions").exists()


def test_the_package_carries_models_whole_and_the_two_modules_it_needs(tmp_path, monkeypatch):
    carried = carried_modules()
    models = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "models").glob("*.py"))
    assert carried == models + ["dataset/audio.py", "helpers/outputs/drawing.py"]
    # a module of models/ importing what the package does not carry is refused, naming both
    from helpers.outputs import package_files
    fake = tmp_path / "repo"
    shutil.copytree(REPO / "models", fake / "models")
    (fake / "dataset").mkdir(), (fake / "helpers" / "outputs").mkdir(parents=True)
    for path in ("dataset/audio.py", "helpers/outputs/drawing.py"):
        shutil.copy(REPO / path, fake / path)
    (fake / "models" / "leaky.py").write_text("from helpers.setup.flags import build_parser\n")
    monkeypatch.setattr(package_files, "REPO", fake)
    with pytest.raises(ExportError, match="models/leaky.py imports helpers.setup.flags"):
        carried_modules()


# --- a new network, added as docs/networks.md says ---

def readme_network_example():
    """The file name and code of the example in the "Adding a network" section of docs/networks.md."""
    section = (REPO / "docs" / "networks.md").read_text().split("## Adding a network", 1)[1].split("\n## ", 1)[0]
    name = re.search(r"`models/(\w+)\.py`", section).group(1)
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return name, code


@pytest.mark.slow
def test_a_network_added_as_the_page_says_trains_exports_and_predicts(demo_dir, tmp_path, package_python):
    name, code = readme_network_example()
    repo = tmp_path / "repo"  # a copy of the project, so that the new file goes where the page says
    repo.mkdir()
    for entry in REPO.iterdir():
        if entry.suffix == ".py" or entry.name == "requirements.txt":  # the package pins its runtime from it
            shutil.copy(entry, repo / entry.name)
        elif entry.name in ("models", "dataset", "helpers", "submission_template"):
            shutil.copytree(entry, repo / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "models" / f"{name}.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("WANDB")}
    env["HOME"] = str(tmp_path)

    # in one process of the copy (for the suite's time; test_end_to_end runs the scripts as commands): the
    # training run (train_base.py's main), the export (as `python export_submission.py --ckpt_id <run> ...`),
    # and the logits the trained checkpoint gives in the project (its final-test path) for the clips
    # predicted below
    files = [str(demo_dir / f) for f in pd.read_csv(demo_dir / "split_setup" / "test.csv", sep="\t")["filename"][:4]]
    devices = ["a", "b", "s4", "unknown"]
    train_export_and_reference = (
        "import json, sys, torch; import train_base, export_submission; from dataset.audio import load_audio; "
        "from helpers.setup.model_loader import read_device_system; from helpers.training.builder import "
        "build_module; from models.inference import store_for_submission; "
        "run_id, _ = train_base.main(json.loads(sys.argv[1])); "
        "export_submission.main(['--ckpt_id', run_id, '--submission_name', 'Toy_TEST_task1', "
        "'--submission_index', '1']); "
        "system, ckpt, _ = read_device_system(run_id, 'DCASE25_Task1'); "
        "module = build_module(ckpt['hyper_parameters'], model=system).eval(); "
        "store_for_submission(system); "
        "waves = torch.stack([load_audio(f)[0] for f in json.loads(sys.argv[2])]); "
        "torch.save(module.inference_logits(waves, json.loads(sys.argv[3])), 'reference.pt')")
    training = ["--model", name, "--base_channels", "8", "--demo", "--demo_dir", str(demo_dir), *TINY]
    out = run([sys.executable, "-c", train_export_and_reference, json.dumps(training), json.dumps(files),
               json.dumps(devices)], repo, env)
    assert f"Model {name}:" in out
    run_id = re.search(r"Run id: (\w+)", out).group(1)
    checkpoint = torch.load(repo / "DCASE25_Task1" / run_id / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["network"]["name"] == name and checkpoint["network"]["config"]["base_channels"] == 8
    assert checkpoint["global_step"] > 0  # it trained
    package = repo / "submissions" / "Toy_TEST_task1"
    assert (package / "Toy_TEST_task1" / "models" / f"{name}.py").is_file()

    # install it offline into an environment that cannot see the repository, and predict
    python = package_python
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", package],
        tmp_path)
    probe = ("import json, sys, torch; from Toy_TEST_task1 import Toy_TEST_task1_1 as api; "
             "logits, classes = api.predict(json.loads(sys.argv[1]), json.loads(sys.argv[2]), use_cuda=False); "
             "torch.save(torch.stack(logits), 'logits.pt'); print(api.__file__)")
    module_file = run([python, "-c", probe, json.dumps(files), json.dumps(devices)], tmp_path, env).strip()
    assert str(repo) not in module_file and "site-packages" in module_file
    logits = torch.load(tmp_path / "logits.pt")

    # the same logits as the trained checkpoint gives in the project
    expected = torch.load(repo / "reference.pt")
    assert logits.shape == (4, 10)
    assert torch.allclose(logits, expected, atol=1e-3), (logits - expected).abs().max()


def torch_save(obj, path):
    torch.save(obj, path)
    return path


def test_checkpoints_without_a_record_are_cp_mobile_from_their_hyper_parameters_or_shapes(tmp_path):
    """The organisers' checkpoints (and this project's older ones) name no network."""
    wide = build_network("cp_mobile", {"base_channels": 40})
    checkpoint = {"state_dict": {f"model.{k}": v for k, v in wide.state_dict().items()},
                  "hyper_parameters": {"base_channels": 40, "channels_multiplier": 1.8, "lr": 0.005}}
    path = torch_save(checkpoint, tmp_path / "organisers.ckpt")
    system, _, _ = read_system(path)
    assert network_record(system) == network_record(wide)
    # a checkpoint that records nothing at all: the settings are read from the weights' shapes
    bare = torch_save({"state_dict": checkpoint["state_dict"]}, tmp_path / "bare.ckpt")
    assert network_record(read_system(bare)[0]) == network_record(wide)
    args = parse_args(build_parser("device", ""), ["--base_channels", "40"])
    assert network_record(read_system(bare, written_network_flags(args))[0]) == network_record(wide)
