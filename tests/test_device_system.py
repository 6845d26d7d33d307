"""The device container, checkpoint lookup and per-device fine-tuning."""
import os
import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from helpers.setup.checkpoints import CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint
from helpers.setup.flags import build_parser, parse_args
from helpers.setup.model_loader import read_system
from helpers.setup.network_flags import written_network_flags
from helpers.training.builder import build_module
from models.cp_mobile import Network, NetworkConfig
from models.multi_device import MultiDeviceModel

TRAIN_DEVICES = ["a", "b", "c", "s1", "s2", "s3"]


def perturbed_system(seed=0):
    """A container whose device models really differ from the general model and from each other."""
    torch.manual_seed(seed)
    system = MultiDeviceModel(Network(), TRAIN_DEVICES)
    with torch.no_grad():
        for p in system.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in system.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return system.eval()


def test_grouped_forward_equals_per_sample_forward():
    system = perturbed_system()
    devices = ["a", "s4", "b", "zz", "a", "c", "s1", "s2", "s3", "s5", "s6", "a", "unknown", "c"]
    x = torch.randn(len(devices), 1, 256, 65)
    with torch.no_grad():
        grouped = system(x, devices)
        one_by_one = torch.cat([system.get_model_for_device(d)(x[i:i + 1]) for i, d in enumerate(devices)])
    assert torch.equal(grouped, one_by_one)
    # the device models do differ, so routing matters
    with torch.no_grad():
        assert not torch.allclose(system.device_models["a"](x[:1]), system.base_model(x[:1]))


def test_grouped_forward_calls_each_model_once():
    system = perturbed_system()
    calls = []
    for name, model in [("general", system.base_model), *system.device_models.items()]:
        model.register_forward_hook(lambda m, i, o, name=name: calls.append((name, i[0].shape[0])))
    devices = ["a", "b", "a", "s4", "s5", "a"]
    with torch.no_grad():
        system(torch.randn(6, 1, 256, 65), devices)
    assert sorted(calls) == [("a", 3), ("b", 1), ("general", 2)]


def test_unknown_devices_fall_back_to_general_model():
    system = perturbed_system()
    for device in ["s4", "s5", "s6", "unknown", "x"]:
        assert system.get_model_for_device(device) is system.base_model
    for device in TRAIN_DEVICES:
        assert system.get_model_for_device(device) is system.device_models[device]
    with pytest.raises(ValueError):
        system(torch.randn(2, 1, 256, 65), ["a"])


def test_container_state_dict_names_are_the_organisers():
    keys = MultiDeviceModel(Network(), TRAIN_DEVICES).state_dict().keys()
    assert "base_model.in_c.0.0.weight" in keys
    assert "device_models.s3.stages.s1.b1.block.0.0.weight" in keys
    assert "device_models.a.feed_forward.1.bias" in keys
    assert len(keys) == 7 * len(Network().state_dict())


def lightning_checkpoint(state_dict, prefix, hparams=None):
    return {"state_dict": {prefix + k: v for k, v in state_dict.items()}, "hyper_parameters": hparams or {}}


def test_resolve_checkpoint_by_id_path_and_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    older = save_checkpoint(lightning_checkpoint(Network().state_dict(), "model."),
                            tmp_path / "proj" / "old1" / "checkpoints" / "last.ckpt")
    os.utime(older, (time.time() - 100, time.time() - 100))
    newer = save_checkpoint(lightning_checkpoint(Network().state_dict(), "model."),
                            tmp_path / "proj" / "new2" / "checkpoints" / "last.ckpt")
    assert resolve_checkpoint("old1", "proj") == older.relative_to(tmp_path)
    assert resolve_checkpoint(str(newer), "proj") == newer
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint("nothere", "proj")
    message = str(err.value)
    assert "nothere" in message and message.index("new2") < message.index("old1")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        resolve_checkpoint(str(tmp_path / "missing.ckpt"), "proj")


def test_general_checkpoints_of_both_layouts_load_strictly(tmp_path):
    source = Network()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    # this project's stage 1 and the organisers' stage 1 both keep the model under "model."
    checkpoint = lightning_checkpoint(source.state_dict(), "model.")
    checkpoint["state_dict"]["mel.0.spectrogram.window"] = torch.ones(3)  # front-end buffers are ignored
    path = save_checkpoint(checkpoint, tmp_path / "general.ckpt")
    system, _, prefix = read_system(path)
    assert prefix == "model." and not system.device_models
    for a, b in zip(source.state_dict().values(), system.base_model.state_dict().values()):
        assert torch.equal(a, b)


def test_organisers_container_prefix_is_recognised(tmp_path):
    system = perturbed_system()
    path = save_checkpoint(lightning_checkpoint(system.state_dict(), "multi_device_model."), tmp_path / "c.ckpt")
    restored, _, prefix = read_system(path)
    assert prefix == "multi_device_model.base_model." and list(restored.device_models) == TRAIN_DEVICES
    assert torch.equal(restored.device_models["s2"].in_c[0][0].weight, system.device_models["s2"].in_c[0][0].weight)


def test_network_flags_that_contradict_the_checkpoint_are_refused_with_both_values(tmp_path):
    wide = Network(NetworkConfig(base_channels=40))
    checkpoint = lightning_checkpoint(wide.state_dict(), "model.", {"base_channels": 40})
    path = save_checkpoint(checkpoint, tmp_path / "w.ckpt")
    args = parse_args(build_parser("device", ""), ["--base_channels", "24"])
    with pytest.raises(CheckpointError, match="--base_channels 24 given here, the checkpoint's network has 40"):
        read_system(path, written_network_flags(args))


def test_non_checkpoint_file_is_refused(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a checkpoint torch can read"):
        load_checkpoint(path)
    torch.save([torch.ones(2)], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="not a dict of weights"):
        load_checkpoint(tmp_path / "list.ckpt")
    torch.save({"notes": "no weights"}, tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_checkpoint(tmp_path / "empty.ckpt")


class RandomClips(torch.utils.data.Dataset):
    def __init__(self, n, device):
        g = torch.Generator().manual_seed(1)
        self.x = 0.1 * torch.randn(n, 1, 44100, generator=g)
        self.y = torch.randint(0, 10, (n,), generator=g)
        self.device = device

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i]), self.device, f"clip{i}.wav"


def test_fine_tuning_touches_only_the_selected_device(tmp_path):
    system = perturbed_system().train()
    before = {k: v.clone() for k, v in system.state_dict().items()}
    config = vars(build_parser("device", "").parse_args(["--n_epochs", "1", "--warmup_steps", "1"]))
    module = build_module(config, model=system.device_models["b"], log_prefix="b/")
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(RandomClips(8, "b"), batch_size=4))
    changed = {k.split(".")[0] + "." + k.split(".")[1] if k.startswith("device_models") else k.split(".")[0]
               for k, v in system.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"device_models.b"}


def finished_run(tmp_path, run_id, system, devices):
    state = {f"model.{k}": v for k, v in system.state_dict().items()}
    return save_checkpoint({"state_dict": state, "completed_devices": devices, "complete": True},
                           tmp_path / "proj" / run_id / "checkpoints" / "last.ckpt")


def test_merge_runs_of_independent_device_jobs(tmp_path, monkeypatch):
    from helpers.setup.model_loader import merge_device_runs
    monkeypatch.chdir(tmp_path)
    job_a = perturbed_system(seed=1)
    job_b = perturbed_system(seed=2)
    job_b.base_model.load_state_dict(job_a.base_model.state_dict())  # both started from one general model
    job_a.device_models = torch.nn.ModuleDict({"a": job_a.device_models["a"]})
    job_b.device_models = torch.nn.ModuleDict({"b": job_b.device_models["b"]})
    finished_run(tmp_path, "job-a", job_a, ["a"])
    finished_run(tmp_path, "job-b", job_b, ["b"])
    merged, _, devices = merge_device_runs(["job-a", "job-b"], "proj")
    assert devices == ["a", "b"]
    x = torch.randn(3, 1, 256, 65)
    with torch.no_grad():
        assert torch.equal(merged.eval()(x, ["a", "b", "s5"]),
                           torch.cat([job_a.device_models["a"](x[:1]), job_b.device_models["b"](x[1:2]),
                                      job_a.base_model(x[2:])]))
    with pytest.raises(CheckpointError, match="more than one"):
        merge_device_runs(["job-a", "job-a"], "proj")
    other = perturbed_system(seed=3)
    other.device_models = torch.nn.ModuleDict({"c": other.device_models["c"]})
    finished_run(tmp_path, "job-c", other, ["c"])
    with pytest.raises(CheckpointError, match="another general model"):
        merge_device_runs(["job-a", "job-c"], "proj")


def test_evaluate_refuses_models_over_the_limits_and_writes_nothing(tmp_path, demo_dir, monkeypatch):
    import train_device_specific
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo_data").symlink_to(demo_dir)
    wide = MultiDeviceModel(Network(NetworkConfig(base_channels=48)), ["a"])  # about 60 million MACs
    save_checkpoint({"state_dict": {f"model.{k}": v for k, v in wide.state_dict().items()},
                     "completed_devices": ["a"], "complete": True},
                    tmp_path / "DCASE25_Task1" / "wide" / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit, match="exceed the complexity limits"):
        train_device_specific.main(["--demo", "--ckpt_id", "wide", "--base_channels", "48", "--evaluate",
                                    "--eval_dir", "demo_data/eval", "--num_workers", "0"])
    assert not (tmp_path / "predictions").exists()
