"""Checkpoints in the layouts that code bases built on the organisers' baseline write, read by the one loader
(helpers/setup/model_loader.py) wherever a checkpoint is taken: the one-line messages a user sees (fast),
and stage 2, --evaluate and the export run on each layout (slow)."""
import os
import re

import pandas as pd
import pytest
import torch
from conftest import TINY_NETWORK

import export_submission
import train_base
import train_device_specific
from helpers import write_teacher_logits
from helpers.setup.checkpoints import CheckpointError
from helpers.setup.model_loader import read_system
from helpers.setup.network_flags import written_network_flags
from models.multi_device import MultiDeviceModel
from models.registry import build_network, network_record

FRONT_END = TINY_NETWORK[2:]  # without --base_channels: the network is the checkpoint's
FLAGS = ["--demo", *FRONT_END, "--n_epochs", "1", "--batch_size", "16", "--num_workers", "0", "--warmup_steps", "1",
         "--check_val_every_n_epoch", "1", "--wandb_mode", "disabled"]
ORGANISERS_WIDTHS = (16, 24, 40)  # narrower, nearly the baseline's 32, wider (over the parameter limit)


def network(name="cp_mobile", seed=0, **settings):
    torch.manual_seed(seed)
    net = build_network(name, settings)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def prefixed(prefix, net):
    return {prefix + k: v for k, v in net.state_dict().items()}


def student_and_teacher(folder):
    """A distillation run that keeps its teacher (a CP-ResNet) inside the checkpoint, as Lightning writes it."""
    student, teacher = network(base_channels=8), network("cp_resnet", base_channels=8)
    state = {**prefixed("model.", student), **prefixed("teacher_model.", teacher)}
    torch.save({"state_dict": state, "hyper_parameters": {"lr": 0.005}}, folder / "distilled.ckpt")
    return folder / "distilled.ckpt", student


def plain_container(folder):
    """A device container saved with plain torch.save as a dict, under other prefixes, with a device outside
    the training devices."""
    general = network(base_channels=16)
    state = prefixed("system.original_model.", general)
    for seed, device in enumerate(("a", "phone9"), start=1):
        state.update(prefixed(f"system.device_models.{device}.", network(seed=seed, base_channels=16)))
    torch.save(state, folder / "container.pt")
    return folder / "container.pt", general


def organisers_format(folder, width):
    """The organisers' Lightning checkpoint of a CP-Mobile of another width: the model under ``model.``, its
    front end's buffers beside it, hyper-parameters without network settings."""
    net = network(base_channels=width, expansion_rate=3.0 if width == 24 else 2.1)
    state = {**prefixed("model.", net), "mel.1.spectrogram.window": torch.hann_window(800)}
    torch.save({"state_dict": state, "hyper_parameters": {"lr": 0.005, "n_epochs": 150}}, folder / f"w{width}.ckpt")
    return folder / f"w{width}.ckpt", net


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_checkpoint_of_this_project_is_read_from_its_record_without_the_other_layouts(tmp_path, monkeypatch):
    from helpers.setup import model_loader

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint with a record went through the other layouts' search")
    monkeypatch.setattr(model_loader, "choose_system", refuse)
    monkeypatch.setattr(model_loader, "foreign_settings", refuse)
    net = network(base_channels=8, n_blocks=(2, 2, 2))
    state = {**prefixed("model.", net), "frontend.mel.window": torch.ones(3)}
    torch.save({"state_dict": state, "network": network_record(net)}, tmp_path / "own.ckpt")
    system, _, prefix = read_system(tmp_path / "own.ckpt")
    assert prefix == "model." and network_record(system) == network_record(net) and same_weights(system.base_model, net)
    container = MultiDeviceModel(net, ["a", "phone9"])
    torch.save({"state_dict": prefixed("model.", container), "network": network_record(net)}, tmp_path / "two.ckpt")
    system, _, prefix = read_system(tmp_path / "two.ckpt")
    assert prefix == "model.base_model." and list(system.device_models) == ["a", "phone9"]


def test_student_and_teacher_in_one_file(tmp_path, capsys):
    path, student = student_and_teacher(tmp_path)
    system, _, prefix = read_system(path)
    out = capsys.readouterr().out
    assert prefix == "model." and not system.device_models and same_weights(system.base_model, student)
    took, ignored, shapes = out.splitlines()[:3]  # which was taken, what was ignored, the settings read
    assert all(fact in took for fact in ("2 networks", "model.: a general model of cp_mobile", "cp_resnet",
                                         "--ckpt_prefix teacher_model."))
    assert "72 entries under teacher_model." in ignored and "base_channels 8," in shapes
    teacher, _, prefix = read_system(path, prefix="teacher_model")
    assert prefix == "teacher_model." and network_record(teacher)["name"] == "cp_resnet"


def test_plain_dict_container_under_another_prefix(tmp_path, capsys):
    path, general = plain_container(tmp_path)
    system, _, prefix = read_system(path)
    assert prefix == "system.original_model." and list(system.device_models) == ["a", "phone9"]
    assert same_weights(system.base_model, general) and network_record(system)["config"]["base_channels"] == 16
    out = capsys.readouterr().out
    assert "base_channels 16," in out and all(d in out for d in ("phone9", "system.", "not a TAU device"))
    # routed by name: phone9's clips go to its own model, unknown devices to the general model
    x = torch.randn(3, 1, 32, 51)
    with torch.no_grad():
        out = system.eval()(x, ["phone9", "zz", "a"])
        assert torch.allclose(out[0], system.device_models["phone9"](x[:1])[0])
        assert torch.allclose(out[1], system.base_model(x[1:2])[0])


@pytest.mark.parametrize("width", ORGANISERS_WIDTHS)
def test_organisers_format_at_other_widths_reads_the_settings_from_the_shapes(tmp_path, capsys, width):
    path, net = organisers_format(tmp_path, width)
    system, _, _ = read_system(path)
    assert network_record(system) == network_record(net) and same_weights(system.base_model, net)
    out = capsys.readouterr().out
    assert "shapes" in out and f"base_channels {width}," in out and "1 entry under mel." in out


def test_flags_that_contradict_the_shapes_are_refused_with_both_values(tmp_path):
    path, _ = organisers_format(tmp_path, 24)
    args = train_device_specific.parse_args(train_device_specific.stage2_parser(""),
                                            ["--ckpt_id", str(path), "--expansion_rate", "2.1"])
    with pytest.raises(CheckpointError, match="--expansion_rate 2.1 given here, the checkpoint's network has 3.0"):
        read_system(path, written_network_flags(args))


def test_another_architecture_is_refused_naming_its_entries(tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.Flatten(),
                                torch.nn.Linear(16, 10))
    torch.save({"state_dict": prefixed("model.", other)}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError) as err:
        read_system(tmp_path / "other.ckpt")
    message = str(err.value)
    assert all(fact in message for fact in ("other.ckpt", "model.0.weight [16, 1, 3, 3]", "cp_mobile",
                                            "in_c.0.0.weight [8, 1, 3, 3]", "nothing was written"))
    # a network that starts like CP-Mobile but has a layer more is refused naming that layer
    net = network(base_channels=8)
    state = {**prefixed("model.", net), "model.stages.s3.extra.weight": torch.ones(4)}
    torch.save({"state_dict": state, "network": network_record(net)}, tmp_path / "extra.ckpt")
    with pytest.raises(CheckpointError, match=r"the network has no stages.s3.extra.weight \[4\]"):
        read_system(tmp_path / "extra.ckpt")


def test_a_network_whose_blocks_are_not_cp_mobiles_is_refused_naming_the_entries_that_do_not_fit(tmp_path):
    """A participant's CP-Mobile with a second stem and its blocks under other names: the message names the
    first entries without a place in CP-Mobile, with their shapes, and what CP-Mobile has there."""
    net = network(base_channels=8)
    state = {}
    for key, value in net.state_dict().items():
        if key.startswith("in_c."):
            state[f"model.{key}"] = value
    state["model.stem2.0.weight"] = torch.ones(16, 8, 3, 3)
    state["model.stem2.1.weight"] = torch.ones(16)
    for key, value in net.state_dict().items():
        if not key.startswith("in_c."):
            state["model." + re.sub(r"^stages\.s(\d)\.b(\d)", r"layers.\1.\2", key)] = value
    torch.save({"state_dict": state}, tmp_path / "stems.ckpt")
    with pytest.raises(CheckpointError) as err:
        read_system(tmp_path / "stems.ckpt")
    message = str(err.value)
    assert "stems.ckpt" in message and "start like cp_mobile's" in message
    assert "model.stem2.0.weight [16, 8, 3, 3], model.stem2.1.weight [16], model.layers.1.1.block.0.0.weight" in message
    assert "where cp_mobile has stages.s1.b1.block.0.0.weight [" in message


def test_stage2_refusing_a_checkpoint_writes_nothing(tmp_path, demo_dir, monkeypatch):
    """The checkpoint is read and checked before the run id is taken: a refused one leaves no run folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DCASE25_RUN_ID", "")
    monkeypatch.delenv("DCASE25_RUN_ID")  # restored (absent) afterwards
    (tmp_path / "demo_data").symlink_to(demo_dir)
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    torch.save({"state_dict": prefixed("model.", other)}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="holds no network of this project"):
        train_device_specific.main(["--ckpt_id", "other.ckpt", *FLAGS])
    assert not (tmp_path / "DCASE25_Task1").exists()


def test_container_without_a_general_model_is_refused(tmp_path):
    torch.save({"state_dict": prefixed("model.device_models.a.", network())}, tmp_path / "devices.ckpt")
    with pytest.raises(CheckpointError, match=r"model.device_models. \(a\) .*no general model"):
        read_system(tmp_path / "devices.ckpt")


class RunConfig:  # a config object of another code base, stored in its checkpoint
    lr = 0.005


def test_config_object_is_not_run_and_the_message_says_what_to_do(tmp_path):
    torch.save({"state_dict": prefixed("model.", network()), "config": RunConfig()}, tmp_path / "config.ckpt")
    with pytest.raises(CheckpointError) as err:
        read_system(tmp_path / "config.ckpt")
    assert "config.ckpt" in str(err.value) and "test_checkpoint_layouts.RunConfig" in str(err.value)
    assert "weights_only=False" in str(err.value)  # how to keep only the weights, for a file the user trusts


# --- stage 2, --evaluate and the export on each layout ---

LAYOUTS = {"student_and_teacher": student_and_teacher, "plain_container": plain_container,
           **{f"organisers_w{w}": (lambda folder, w=w: organisers_format(folder, w)) for w in ORGANISERS_WIDTHS}}


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_stage2_evaluate_and_export_take_each_layout(workdir_factory, monkeypatch, capsys, layout):
    root = workdir_factory(layout)
    monkeypatch.chdir(root)
    environment = dict(os.environ)
    try:
        path, net = LAYOUTS[layout](root)
        run_id, results = train_device_specific.main(["--ckpt_id", str(path), "--train_devices", "a", *FLAGS])
        assert results["Device-specific Models"]["count"] == 90
        stage2 = torch.load(root / "DCASE25_Task1" / run_id / "checkpoints" / "last.ckpt", weights_only=True)
        assert stage2["network"]["config"]["base_channels"] == net.config.base_channels
        if layout == "student_and_teacher":  # the teacher inside, by its prefix; the student to start stage 1 from
            written = write_teacher_logits.main([str(path), "--ckpt_prefix", "teacher_model.", "--out", "t.tsv",
                                                 *FLAGS])
            table = pd.read_csv(written, sep="\t")
            assert len(table) == 80 + 90
            general, _ = train_base.main(["--init_ckpt", str(path), *FLAGS])
            assert (root / "DCASE25_Task1" / general / "checkpoints" / "last.ckpt").is_file()
        capsys.readouterr()
        evaluate = ["--ckpt_id", str(path), "--evaluate", "--eval_dir", "demo_data/eval", *FLAGS]
        export = ["--ckpt_id", str(path), "--submission_name", "Layout_TEST_task1", "--submission_index", "1",
                  "--split_dir", "demo_data/split_setup"]
        if layout == "organisers_w40":  # over the parameter limit: refused as a submission, after loading
            with pytest.raises(SystemExit, match="limit"):
                train_device_specific.main(evaluate)
            with pytest.raises(SystemExit, match="limit"):
                export_submission.main(export)
            assert not (root / "submissions").exists() and not (root / "predictions").exists()
            return
        table = pd.read_csv(train_device_specific.main(evaluate), sep="\t")
        assert len(table) == 10
        out = capsys.readouterr().out
        if layout != "plain_container":
            assert "one model for all devices" in out
        package = export_submission.main(export)
        assert (package / "Layout_TEST_task1" / "Layout_TEST_task1_1.py").is_file()
    finally:
        os.environ.clear()
        os.environ.update(environment)
