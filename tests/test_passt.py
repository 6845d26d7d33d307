"""PaSST, the AudioSet-pretrained teacher (models/passt.py): its weights (download, files, refusals), its
front end, its training defaults, and the whole teacher path on the demo set with random weights (the
AudioSet weights cannot be downloaded here): a PaSST run, its teacher file with a CP-ResNet in one ensemble,
a distilled CP-Mobile student, and stage 2 with a device-specific PaSST teacher. The network itself (12
blocks, 85 million parameters) is built and checked by the first tests; the whole path runs on a PaSST of
one block, built by the same code, for the suite's time."""
import os
import urllib.error

import pandas as pd
import pytest
import torch
from conftest import TINY_NETWORK

import train_base
import train_device_specific
from helpers import write_teacher_logits
from helpers.outputs.complexity import model_complexity, over_limits_warning
from helpers.outputs.package_files import REPO, carried_modules, imported_modules
from helpers.outputs.submission import ExportError, export_submission
from helpers.setup.flags import parse_args, stage1_parser
from models import passt
from models.registry import NetworkError, build_frontend, build_network


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return build_network("passt", {"pretrained": "none"}).eval()


@pytest.fixture(scope="module")
def features():
    torch.manual_seed(1)
    return build_frontend("passt", {}, 44100).eval()(0.1 * torch.randn(2, 1, 44100))


def test_the_network_and_its_own_front_end(network, features, capsys):
    assert sum(p.numel() for p in network.parameters()) == 85_358_612
    assert features.shape == (2, 1, 128, 100)  # 1 s at 32 kHz, hop 320, 128 mel bins: the package's front end
    assert network(features).shape == (2, 10)
    assert capsys.readouterr().out == ""  # the package's prints stay off the console
    complexity = model_complexity(network, (1, 1, 128, 100))
    warning = over_limits_warning(complexity, teacher="passt")
    assert "passt is a teacher network" in warning and "refuse it" in warning


def test_a_weights_file_of_the_networks_own_state_dict_loads_strictly_with_the_same_logits(network, features,
                                                                                         tmp_path):
    path = tmp_path / "own.pt"
    torch.save(network.net.state_dict(), path)  # the authors' layout: the network without the "net." prefix
    torch.manual_seed(5)
    other = build_network("passt", {"pretrained": str(path)}).eval()
    assert "starts from" in other.load_pretrained_weights()
    with torch.no_grad():
        assert torch.equal(other(features), network(features))
    torch.save(network.state_dict(), tmp_path / "wrapped.pt")  # this project's layout ("net.") is taken too
    assert passt.read_weights(tmp_path / "wrapped.pt").keys() == network.net.state_dict().keys()


def test_audioset_heads_are_replaced_and_a_file_that_does_not_fit_is_refused(network, tmp_path):
    state = dict(network.net.state_dict())
    state["head.1.weight"], state["head.1.bias"] = torch.zeros(527, 768), torch.zeros(527)  # AudioSet's head
    replaced = passt.load_authors_weights(network.net, state, "audioset.pt")
    assert replaced == ["head.1.weight", "head.1.bias"]
    del state["blocks.3.attn.qkv.weight"]
    state["pos_embed"] = torch.zeros(1)
    with pytest.raises(NetworkError) as refused:
        passt.load_authors_weights(network.net, state, "broken.pt")
    message = str(refused.value)
    assert "broken.pt" in message and "missing blocks.3.attn.qkv.weight" in message and "pos_embed" in message
    state = dict(network.net.state_dict(), **{"patch_embed.proj.weight": torch.zeros(768, 1, 8, 8)})
    with pytest.raises(NetworkError, match=r"patch_embed.proj.weight \(768, 1, 8, 8\) \(expected \(768, 1, 16, 16\)"):
        passt.load_authors_weights(network.net, state, "other.pt")


def test_without_network_the_run_stops_before_anything_is_written(tmp_path, monkeypatch):
    """The default, --pretrained audioset, downloads the authors' file into the torch hub cache; offline the
    message names the file, its address and the folder to put it in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, destination, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(NetworkError) as stopped:
        train_base.main(["--model", "passt", "--demo", "--wandb_mode", "offline"])
    message = str(stopped.value)
    assert "passt-s-f128-p16-s10-ap.476-swa.pt" in message and passt.WEIGHTS_URL in message
    assert str(tmp_path / "hub" / "checkpoints") in message and "--pretrained none" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"]  # no data, run, cache or wandb folder


def test_the_exported_package_never_needs_the_teachers_packages():
    carried = {path: (REPO / path).read_text() for path in carried_modules()}
    assert "models/passt.py" in carried  # models/ goes whole, PaSST's file with it
    assert not imported_modules(carried) & {"hear21passt", "timm", "torchvision"}


def test_teacher_defaults_apply_only_to_passt_and_help_shows_them():
    teacher = parse_args(stage1_parser(""), ["--model", "passt"])
    assert (teacher.lr, teacher.n_epochs, teacher.batch_size, teacher.mixstyle_p) == (1e-5, 25, 80, 0.4)
    assert teacher.dir_p == 0.0  # the recipe's DIR needs --dir_dir
    assert parse_args(stage1_parser(""), ["--model", "passt", "--dir_dir", "irs"]).dir_p == 0.6
    assert parse_args(stage1_parser(""), ["--model", "passt", "--lr", "3e-5"]).lr == 3e-5
    baseline = parse_args(stage1_parser(""), [])
    assert (baseline.lr, baseline.n_epochs, baseline.batch_size) == (0.005, 150, 256)
    help_text = " ".join(stage1_parser("").format_help().split())
    assert "[--model passt: 1e-05] (default: 0.005)" in help_text


def small_split(demo_dir, folder):
    """A split folder with 8 training clips (4 of device a) and 9 test clips, for PaSST's slow steps."""
    folder.mkdir()
    train = pd.read_csv(demo_dir / "split_setup" / "split25.csv", sep="\t")
    picked = pd.concat([train[train.filename.str.endswith("-a.wav")].head(4),
                        train[~train.filename.str.endswith("-a.wav")].head(4)])
    picked.to_csv(folder / "split25.csv", sep="\t", index=False)
    pd.read_csv(demo_dir / "split_setup" / "test.csv", sep="\t").iloc[::10].to_csv(folder / "test.csv", sep="\t",
                                                                                 index=False)
    return folder


def one_block_passt(monkeypatch):
    """The authors' architecture function, with one transformer block instead of twelve (every other setting
    and all of this project's code as for the real network)."""
    import hear21passt.models.passt as package
    create = package._create_vision_transformer

    def one_block(pretrained=False, **kwargs):
        return create(passt.ARCHITECTURE, pretrained=pretrained, distilled=True, patch_size=16, embed_dim=768,
                      depth=1, num_heads=12, **kwargs)
    monkeypatch.setattr(package, passt.ARCHITECTURE, one_block)


@pytest.mark.slow
def test_the_whole_teacher_path_with_a_randomly_initialised_passt(workdir_factory, demo_dir, monkeypatch):
    root = workdir_factory("passt")
    one_block_passt(monkeypatch)
    monkeypatch.chdir(root)
    monkeypatch.setenv("DCASE25_RUN_ID", "")
    split = ["--split_dir", str(small_split(demo_dir, root / "small_split"))]
    short = ["--demo", *split, "--n_epochs", "1", "--batch_size", "4", "--num_workers", "0", "--warmup_steps", "1",
             "--check_val_every_n_epoch", "1", "--wandb_mode", "disabled", "--seed", "1"]
    # the teacher: PaSST, randomly initialised, a few training steps in bf16 mixed precision (on a CPU here)
    teacher, results = train_base.main(["--model", "passt", "--pretrained", "none", "--precision", "bf16-mixed",
                                        *short])
    assert results["count"] == 9
    checkpoint = torch.load(root / "DCASE25_Task1" / teacher / "checkpoints" / "last.ckpt", weights_only=True,
                            mmap=True)
    record = checkpoint["network"]
    assert record["name"] == "passt" and record["config"]["pretrained"] == "none"
    assert "model.net.blocks.0.attn.qkv.weight" in checkpoint["state_dict"]
    assert "model.net.blocks.1.attn.qkv.weight" not in checkpoint["state_dict"]  # the one-block PaSST of this test
    resnet, _ = train_base.main(["--model", "cp_resnet", "--base_channels", "8", *short])

    # one ensemble file of PaSST and CP-ResNet, each through its own front end
    write_teacher_logits.main([teacher, resnet, "--out", "ensemble.tsv", *short])
    table = pd.read_csv("ensemble.tsv", sep="\t")
    assert len(table) == 8 + 9 and table.columns[0] == "filename"

    # the CP-Mobile student distilled from it: the loss logged with its two parts
    student, _ = train_base.main([*TINY_NETWORK, "--teacher_logits", "ensemble.tsv", *short])
    metrics = pd.read_csv(next((root / "DCASE25_Task1" / student).glob("*/metrics.csv")))
    assert {"train/kd_loss", "train/label_loss"} <= set(metrics.columns)

    # stage 2 of the PaSST: device-specific teachers, their teacher file, and the student's stage 2 distilled
    # from it (the teachers' logits are routed by device)
    devices, results = train_device_specific.main(["--ckpt_id", teacher, "--train_devices", "a", *short])
    assert results["Device-specific Models"]["count"] == 9
    write_teacher_logits.main([devices, "--out", "devices.tsv", *short])
    assert len(pd.read_csv("devices.tsv", sep="\t")) == 8 + 9
    _, results = train_device_specific.main([*TINY_NETWORK, "--ckpt_id", student, "--train_devices", "a",
                                             "--teacher_logits", "devices.tsv", *short])
    assert results["Device-specific Models"]["count"] == 9

    # a teacher is no submission: --evaluate and the export refuse it, writing nothing
    with pytest.raises(SystemExit, match="exceed the complexity limits"):
        train_device_specific.main(["--ckpt_id", teacher, "--evaluate", "--eval_dir", "demo_data/eval", *short])
    with pytest.raises(ExportError, match="exceed the complexity limits"):
        export_submission(teacher, "Passt_TEST_task1", 1, "submissions")
    assert not os.path.exists("predictions") and not os.path.exists("submissions")
