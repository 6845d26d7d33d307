"""The exported submission package: export from a stage-2 checkpoint, install it into a temporary
virtual environment, and use it as the organisers do, from a process that cannot see this repository."""
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch
from matplotlib.image import imread

import export_submission as export_command
from dataset import dcase25
from dataset.audio import load_audio
from dataset.dcase25 import CLASSES
from helpers.base.errors import DataError
from helpers.outputs.package_files import rewrite_imports
from helpers.outputs.submission import ExportError, export_submission
from helpers.setup.flags import build_parser, parse_args
from helpers.training.builder import build_module
from models.cp_mobile import Network, NetworkConfig
from models.inference import store_for_submission
from models.multi_device import MultiDeviceModel

pytestmark = pytest.mark.slow  # every test of this module starts processes or trains

REPO = Path(__file__).resolve().parents[1]
LABEL = "Test_TEST_task1"
DEVICES = ["a", "b", "c", "s1", "s2", "s3"]


def perturb(model, seed):
    """Distinct, non-trivial weights and batch-norm statistics (a stand-in for training)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.add_(0.1 * torch.randn(b.shape, generator=generator))
            elif name.endswith("running_var"):
                b.mul_(1 + 0.5 * torch.rand(b.shape, generator=generator))


def save_stage2_run(root, run_id, flags=()):
    """A checkpoint in the format of train_device_specific.py: the SceneClassifier's state dict
    (``model.base_model.*``, ``model.device_models.<device>.*``, ``frontend.*``) and the flags."""
    args = parse_args(build_parser("device", ""), ["--demo", "--demo_dir", str(root / "demo_data"), *flags])
    config = vars(args)
    general = Network(NetworkConfig.from_args(args))
    perturb(general, 0)
    system = MultiDeviceModel(general, DEVICES)
    for i, device in enumerate(DEVICES):
        perturb(system.device_models[device], i + 1)
    path = root / "DCASE25_Task1" / run_id / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": build_module(config, model=system).state_dict(), "hyper_parameters": config}, path)
    return config, system


def run(cmd, cwd, env=None, check=True):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


# runs the package's scripts one after another in one interpreter, each as `python SCRIPT ARGS` would run it
# (as __main__, with its own argv; its exit status, stdout and stderr kept apart), to save the start of a
# process; the modules named in the second argument cannot be imported (as if not installed)
SCRIPTS = """
import contextlib, io, json, runpy, sys, traceback
sys.modules.update(dict.fromkeys(json.loads(sys.argv[2])))
results = []
for script, args in json.loads(sys.argv[1]):
    sys.argv, out, err, code = [script, *args], io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append(dict(returncode=code, stdout=out.getvalue(), stderr=err.getvalue()))
print(json.dumps(results))
"""


def run_scripts(python, calls, cwd, env, without=()):
    """``[(script, [args])]`` run in one process of ``python`` in which the modules ``without`` cannot be
    imported; a result per call, as ``subprocess.run`` gives."""
    result = run([python, "-c", SCRIPTS, json.dumps([(script, [str(a) for a in args]) for script, args in calls]),
                  json.dumps(list(without))], cwd=cwd, env=env)
    return [subprocess.CompletedProcess(script, r["returncode"], r["stdout"], r["stderr"])
            for (script, _), r in zip(calls, json.loads(result.stdout.strip().splitlines()[-1]))]


def tree_digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(workdir_factory):
    """Index 1 exported by the command line as a user runs it, index 2 by the command's main in this
    process (a checkpoint path for --ckpt_id), index 4 (over the limits) by the helper."""
    root = workdir_factory("submission")
    config, system = save_stage2_run(root, "run1")
    save_stage2_run(root, "big", ["--base_channels", "64"])
    export = [sys.executable, REPO / "export_submission.py", "--project_name", root / "DCASE25_Task1",
              "--submission_name", LABEL, "--out_dir", root / "submissions"]
    out1 = run([*export, "--ckpt_id", "run1", "--submission_index", "1"], cwd=root).stdout
    package = root / "submissions" / LABEL
    first = tree_digests(package)
    export_command.main([str(a) for a in export[2:]] + ["--ckpt_id", str(root / "DCASE25_Task1" / "run1" /
                                                                       "checkpoints" / "last.ckpt"),
                                                          "--submission_index", "2"])
    with pytest.raises(ExportError, match="exceed the complexity limits"):
        export_submission(root / "DCASE25_Task1" / "big" / "checkpoints" / "last.ckpt", LABEL, 3,
                          root / "submissions")
    export_submission(root / "DCASE25_Task1" / "big" / "checkpoints" / "last.ckpt", LABEL, 4,
                      root / "submissions", check_limits=False)
    return {"root": root, "config": config, "system": system, "package": package, "first": first, "out1": out1}


@pytest.fixture(scope="module")
def venv(exported, package_python):
    """A fresh virtual environment that sees this interpreter's site-packages (torch, ...) but not the
    repository, with the package installed into it by pip from the package folder, as the README says.
    Offline, so pip builds with this environment's setuptools and the package's pinned dependencies must
    be met by the training environment's packages."""
    root, package = exported["root"], exported["package"]
    python = package_python
    before = tree_digests(package)
    run([python, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-index", package], cwd=root)
    workdir = root / "outside"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {"python": python, "cwd": workdir, "env": env, "package_before": before,
            "package_after": tree_digests(package)}


def test_package_layout_and_second_index_leaves_first_untouched(exported):
    package, label_dir = exported["package"], exported["package"] / LABEL
    for name in ("pyproject.toml", "test_complexity.py", "evaluate_submission.py", f"{LABEL}/__init__.py",
                 f"{LABEL}/{LABEL}_1.py", f"{LABEL}/{LABEL}_2.py", f"{LABEL}/{LABEL}_4.py",
                 f"{LABEL}/ckpts/{LABEL}_1.pt", f"{LABEL}/models/cp_mobile.py", f"{LABEL}/models/multi_device.py",
                 f"{LABEL}/models/frontend.py", f"{LABEL}/dataset/audio.py", f"{LABEL}/helpers/outputs/drawing.py",
                 f"{LABEL}/resources/dummy.wav",
                 f"{LABEL}/resources/test.csv"):
        assert (package / name).is_file(), name
    assert not (label_dir / f"{LABEL}_3.py").exists()  # refused: over the limits
    after = tree_digests(package)
    assert {k: after[k] for k in exported["first"]} == exported["first"]
    assert 'SUBMISSION_INDEX = 2' in (label_dir / f"{LABEL}_2.py").read_text()
    # 16-bit parameters, read without running code
    state = torch.load(label_dir / "ckpts" / f"{LABEL}_1.pt", weights_only=True)["state_dict"]
    assert {v.dtype for k, v in state.items() if "num_batches_tracked" not in k} == {torch.float16}
    assert "device_models.s3.feed_forward.0.weight" in state
    # the copied code is the project's, with relative imports, not kept twice in the repository
    copied = (label_dir / "models" / "cp_mobile.py").read_text()
    assert copied == (REPO / "models" / "cp_mobile.py").read_text().replace("from models.", "from ..models.")
    assert (label_dir / "models" / "registry.py").is_file()
    assert (label_dir / "models" / "cp_resnet.py").is_file()  # models/ goes whole
    assert not list(REPO.glob("submission_template/**/cp_mobile.py"))
    wav = load_audio(label_dir / "resources" / "dummy.wav")
    assert wav[0].shape == (1, 44100) and wav[1] == 44100
    assert "| s3 | 29,419,156 | 61,148 | 122,296 | yes |" in exported["out1"]


def test_export_refusals(exported, tmp_path, monkeypatch):
    ckpt = exported["root"] / "DCASE25_Task1" / "run1" / "checkpoints" / "last.ckpt"
    out = exported["root"] / "submissions"
    for label in ("demo_task1", "Lastname_INST_task2", "Müller_JKU_task1", "Smith-Jones_X_task1", ""):
        with pytest.raises(ExportError, match="Lastname"):
            export_submission(ckpt, label, 1, tmp_path)
    for index in (0, 5, True):
        with pytest.raises(ExportError, match="1 to 4"):
            export_submission(ckpt, LABEL, index, tmp_path)
    before = tree_digests(exported["package"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--overwrite"):  # one line, no traceback (the command below: its exit code)
        export_command.main(["--ckpt_id", str(ckpt), "--submission_name", LABEL, "--submission_index", "1",
                             "--out_dir", str(out)])
    bad = run([sys.executable, REPO / "export_submission.py", "--ckpt_id", ckpt, "--submission_name", "lastname_inst",
               "--submission_index", "1", "--out_dir", tmp_path], cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "Schmid_CPJKU_task1" in bad.stderr
    assert tree_digests(exported["package"]) == before
    assert not list(tmp_path.glob("*/"))  # nothing written for refused labels


def test_rewrite_imports_makes_project_imports_relative():
    source = "import torch\nfrom models.cp_mobile import Network\nfrom dataset.audio import load_audio\n"
    rewritten = rewrite_imports(source, "models/frontend.py")
    assert "from ..models.cp_mobile import Network" in rewritten
    assert "from ..dataset.audio import load_audio" in rewritten
    assert "from .models.cp_mobile import Network" in rewrite_imports(source, "top_level.py")
    assert rewritten.startswith("import torch\n")


PROBE = r"""
import importlib, json, sys
import torch
try:
    import models  # the repository must not be visible
    sys.exit("the repository's modules are importable")
except ImportError:
    pass
api = importlib.import_module("{label}.{label}_1")
files, devices = json.loads(sys.argv[1]), json.loads(sys.argv[2])
model = api.load_model()
inputs = api.load_inputs(files, devices, model)
logits, classes = api.predict(files, devices, use_cuda=False)
backwards, _ = api.predict(files[::-1], devices[::-1], use_cuda=False, batch_size=3)
general = api.get_model_for_device(model, "unknown")
other = api.load_model()
other.frontend_for(16000)  # a front end made before the model moves must move with it
moved = {{str(b.dtype) for b in other.to(torch.float64).other_frontends["16000"].buffers() if b.is_floating_point()}}
torch.save({{"logits": torch.stack(logits), "backwards": torch.stack(backwards)}}, "probe.pt")
print(json.dumps({{
    "module_file": api.__file__,
    "is_module": isinstance(model, torch.nn.Module),
    "inputs": [[list(x.shape), str(x.dtype)] for x in inputs],
    "logits": [[type(x).__name__, list(x.shape), str(x.dtype)] for x in logits],
    "classes": classes,
    "uses_general": {{d: api.get_model_for_device(model, d) is general
                     for d in ["a", "s3", "s4", "s6", "unknown", "xyz"]}},
    "param_dtypes": sorted({{str(p.dtype) for p in api.get_model_for_device(model, "a").parameters()}}),
    "extra_frontend_moved": moved == {{"torch.float64"}},
}}))
"""


def test_installed_package_interface_and_consistency(exported, venv):
    root = exported["root"]
    meta = pd.read_csv(root / "demo_data" / "meta.csv", sep="\t")
    test = pd.read_csv(root / "demo_data" / "split_setup" / "test.csv", sep="\t")[["filename"]].merge(meta)
    picked = test.groupby("source_label").head(2)  # two clips of every device
    files = [str(root / "demo_data" / f) for f in picked["filename"]]
    devices = picked["source_label"].tolist()
    files += [files[0]] * 3  # the same clip as an unknown device: the general model
    devices += ["unknown", "s5", "zz9"]
    result = run([venv["python"], "-c", PROBE.format(label=LABEL), json.dumps(files), json.dumps(devices)],
                 cwd=venv["cwd"], env=venv["env"])
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert "site-packages" in info["module_file"] and str(REPO) not in info["module_file"]
    assert info["is_module"] and info["classes"] == CLASSES
    assert info["inputs"] == [[[1, 1, 256, 65], "torch.float16"]] * len(files)
    assert info["logits"] == [["Tensor", [10], "torch.float32"]] * len(files)
    assert info["uses_general"] == {"a": False, "s3": False, "s4": True, "s6": True, "unknown": True, "xyz": True}
    assert info["param_dtypes"] == ["torch.float16"]
    assert info["extra_frontend_moved"]
    probe = torch.load(venv["cwd"] / "probe.pt")
    logits = probe["logits"]
    assert torch.equal(probe["backwards"], logits.flip(0))  # input order, whatever the batching

    # the final test of train_device_specific.py: SceneClassifier.inference_logits, 16-bit parameters
    module = build_module(exported["config"], model=exported["system"]).eval()
    store_for_submission(exported["system"])
    waveforms = torch.stack([load_audio(f)[0] for f in files])
    reference = module.inference_logits(waveforms, devices)
    assert torch.equal(logits.argmax(1), reference.argmax(1))
    assert torch.allclose(logits, reference, rtol=1e-3, atol=1e-3), (logits - reference).abs().max()
    general = copy.deepcopy(exported["system"].base_model).float()  # plain 32 bits on the stored 16-bit values
    with torch.no_grad():
        general_logits = general(module.frontend(waveforms[:1]).half().float())
    for row in range(len(files) - 3, len(files)):
        assert torch.equal(logits[row], logits[len(files) - 3])
        assert torch.allclose(logits[row], general_logits[0], atol=1e-3)
    assert not torch.allclose(logits[0], logits[len(files) - 1], atol=1e-2)  # device a has its own model


def test_complexity_check_and_evaluation_scripts(exported, venv):
    root, cwd = exported["root"], venv["cwd"]
    for script in ("test_complexity.py", "evaluate_submission.py"):  # run beside the installed package only
        shutil.copy(exported["package"] / script, cwd / script)
    # the package's index 1, index 4 (over the limits) and index 3 (not there), in one process
    ok, too_big, missing = run_scripts(venv["python"], [
        ("test_complexity.py", ["--submission_name", LABEL, "--submission_index", index]) for index in "143"],
        cwd=cwd, env=venv["env"])
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "29,419,156" in ok.stdout and "122,296" in ok.stdout and "general" in ok.stdout
    complexity = json.loads((cwd / "predictions" / f"{LABEL}_1" / "complexity.json").read_text())
    assert set(complexity["models"]) == set(DEVICES) | {"general"}
    assert complexity["per_device"]["s4"]["model"] == "general" and complexity["within_limits"]
    assert too_big.returncode == 1 and "exceeds the complexity limits" in too_big.stderr
    assert missing.returncode != 0 and "Could not import" in missing.stderr

    split = pd.read_csv(root / "demo_data" / "split_setup" / "test.csv", sep="\t")
    split.groupby("scene_label").head(2).to_csv(cwd / "small_test.csv", sep="\t", index=False)  # all classes
    evaluation = run([venv["python"], "evaluate_submission.py", "--submission_name", LABEL, "--submission_index", "2",
                      "--dev_set_dir", root / "demo_data", "--eval_set_dir", root / "demo_data" / "eval",
                      "--test_split_csv", cwd / "small_test.csv"], cwd=cwd, env=venv["env"])
    assert "macro-average accuracy" in evaluation.stdout and "20 files" in evaluation.stdout
    folder = cwd / "predictions" / f"{LABEL}_2"
    table = pd.read_csv(folder / "output.csv", sep="\t")
    listed = pd.read_csv(root / "demo_data" / "eval" / "evaluation_setup" / "fold1_test.csv", sep="\t")
    assert list(table.columns) == ["filename", "scene_label"] + CLASSES
    assert table["filename"].tolist() == listed["filename"].tolist()
    assert abs(table[CLASSES].to_numpy().sum(axis=1) - 1).max() < 1e-5
    # the same classes as the training system's inference on the same files
    module = build_module(exported["config"], model=exported["system"]).eval()
    store_for_submission(exported["system"])
    waveforms = torch.stack([load_audio(root / "demo_data" / "eval" / f)[0] for f in listed["filename"]])
    reference = module.inference_logits(waveforms, listed["device_id"].astype(str).tolist())
    assert table["scene_label"].tolist() == [CLASSES[i] for i in reference.argmax(1).tolist()]
    accuracy = json.loads((folder / "test_accuracy.json").read_text())
    assert set(accuracy["Class-wise Accuracy"]) == set(CLASSES)
    assert set(accuracy["Device-wise Accuracy"]) <= {"a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"}
    assert accuracy["Macro Average Accuracy"] == pytest.approx(
        sum(accuracy["Class-wise Accuracy"].values()) / 10, abs=0.01)
    assert json.loads((folder / "complexity.json").read_text())["within_limits"]
    # the confusion counts: two clips per class, and the class-wise accuracies follow from them
    confusion = accuracy["Confusion Matrix"]
    assert confusion["classes"] == CLASSES and confusion["rows"] == "true class"
    matrices = confusion["per_device"].values()
    assert [sum(sum(m[i]) for m in matrices) for i in range(10)] == [2] * 10
    for i, name in enumerate(CLASSES):
        assert 100 * sum(m[i][i] for m in matrices) / 2 == pytest.approx(accuracy["Class-wise Accuracy"][name])
    # the figures, drawn by the package's copy of helpers/outputs/drawing.py
    for name, shape in (("confusion_submission.png", (850, 950)), ("accuracy_map_submission.png", (750, 1050))):
        assert imread(folder / name).shape[:2] == shape and name in evaluation.stdout


def test_installing_leaves_the_package_folder_as_exported(exported, venv):
    assert venv["package_after"] == venv["package_before"]
    assert not [p.name for p in exported["package"].iterdir() if p.name == "build" or p.name.endswith(".egg-info")]


def test_package_pins_the_runtime_it_imports(exported, venv):
    """torch and torchaudio as the matched pair of requirements.txt, and the other modules the package and
    its checks import (the install above resolved these pins against the training environment)."""
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    # matplotlib: the package's copy of helpers/outputs/drawing.py draws evaluate_submission.py's figures
    expected = {line for line in lines if re.match(r"(torch|torchaudio|av|numpy|pandas|torchinfo|matplotlib)\b", line)}
    assert {"torch==2.11.0", "torchaudio==2.11.0"} <= expected and len(expected) == 7
    pyproject = tomllib.loads((exported["package"] / "pyproject.toml").read_text())
    assert set(pyproject["project"]["dependencies"]) == expected
    requires = run([venv["python"], "-c", f"import importlib.metadata as m; print(m.requires('{LABEL}'))"],
                   cwd=venv["cwd"], env=venv["env"]).stdout
    assert all(line in requires for line in expected)


def test_readme_package_checks_work_from_the_package_folder(exported, venv):
    """The README's check commands, run where it says: in the package folder, with its demo paths (the
    fixture has the demo's layout: <root>/demo_data and <root>/submissions/<label>/). The run has no
    matplotlib (one process for two checks, for the suite's time): the evaluation still runs and says in one
    line that the figures are skipped; the figures themselves are checked above."""
    readme = (REPO / "docs" / "submission.md").read_text()
    assert "cd submissions/Lastname_INST_task1" in readme
    folder, flags = re.search(r"from its folder `submissions/(\w+)/`:\s+`(--dev_set_dir [^`]+)`", readme).groups()
    assert folder == "Demo_DEMO_task1"
    package = exported["package"]
    before = tree_digests(package)
    try:
        check = ["--submission_name", LABEL, "--submission_index", "1", *flags.split()]
        [result] = run_scripts(venv["python"], [("evaluate_submission.py", check)], cwd=package, env=venv["env"],
                               without=["matplotlib"])
        assert result.returncode == 0, result.stderr[-3000:]
        assert "macro-average accuracy" in result.stdout and "test.csv" not in result.stdout
        assert [line for line in result.stdout.splitlines() if "Figures skipped" in line] == [
            "Figures skipped: matplotlib is not installed (pip install matplotlib to get them)."]
        assert (package / "predictions" / f"{LABEL}_1" / "output.csv").is_file()
        assert not list((package / "predictions" / f"{LABEL}_1").glob("*.png"))
    finally:  # what the checks write into the package folder goes, so that other tests see it as exported
        shutil.rmtree(package / "predictions", ignore_errors=True)
        shutil.rmtree(package / "__pycache__", ignore_errors=True)
    assert tree_digests(package) == before


@pytest.fixture
def bare_checkpoint(exported, tmp_path):
    """A stage-2 checkpoint file alone in a folder, whose recorded split folder does not exist here."""
    source = exported["root"] / "DCASE25_Task1" / "run1" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(source, weights_only=False)
    checkpoint["hyper_parameters"]["split_dir"] = str(tmp_path / "gone" / "split_setup")
    path = tmp_path / "models" / "system.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    return path


def test_package_from_a_bare_checkpoint_downloads_the_test_split(exported, bare_checkpoint, tmp_path, monkeypatch):
    """As the training scripts do: into split_setup/ (or --split_dir), from the organisers' release (here
    a local folder standing in for it)."""
    release = tmp_path / "release"
    release.mkdir()
    shutil.copy(exported["root"] / "demo_data" / "split_setup" / "test.csv", release / "test.csv")
    monkeypatch.setattr(dcase25, "SPLIT_URL", release.as_uri() + "/")
    monkeypatch.chdir(tmp_path)
    package = export_submission(bare_checkpoint, LABEL, 1, tmp_path / "out")
    assert (package / LABEL / "resources" / "test.csv").read_bytes() == (release / "test.csv").read_bytes()
    assert (tmp_path / "split_setup" / "test.csv").is_file()  # kept for the next export, as in training
    (tmp_path / "given").mkdir()
    (tmp_path / "given" / "test.csv").write_text("filename\tscene_label\naudio/x-a.wav\tpark\n")
    package = export_submission(bare_checkpoint, LABEL, 1, tmp_path / "out2", split_dir=tmp_path / "given")
    assert (package / LABEL / "resources" / "test.csv").read_text().startswith("filename\tscene_label\naudio/x-a")


def test_export_without_the_test_split_offline_is_refused(bare_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dcase25, "SPLIT_URL", (tmp_path / "no_release").as_uri() + "/")  # unreachable
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"test\.csv .*--split_dir"):
        export_submission(bare_checkpoint, LABEL, 1, tmp_path / "out")
    with pytest.raises(SystemExit) as stop:
        export_command.main(["--ckpt_id", str(bare_checkpoint), "--submission_name", LABEL, "--submission_index", "1",
                             "--out_dir", str(tmp_path / "out"), "--split_dir", str(tmp_path / "splits")])
    assert "test.csv" in str(stop.value) and "--split_dir" in str(stop.value)
    assert not (tmp_path / "out").exists()  # nothing written
