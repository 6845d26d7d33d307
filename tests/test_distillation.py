"""Knowledge distillation: the loss, the teacher file, its lookup by clip, and the teacher-logits command."""
import math
from types import SimpleNamespace

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

import train_base
from dataset import dcase25
from dataset.cache import AudioCache
from dataset.dcase25 import CLASSES, DataError, of_devices, training_rows
from helpers import write_teacher_logits as teacher_command
from helpers.setup.checkpoints import save_checkpoint
from helpers.setup.data import make_loader
from helpers.setup.flags import build_parser, parse_args
from helpers.training import losses
from helpers.training.builder import build_module, build_parts
from helpers.training.losses import distillation_loss, kd_loss, teacher_targets
from helpers.training.module import SceneClassifier
from helpers.training.teacher_file import TeacherLogits
from models.cp_mobile import Network, NetworkConfig
from models.multi_device import MultiDeviceModel

SMALL_NET = ["--base_channels", "8"]


@pytest.fixture(scope="module")
def demo(demo_dir):
    return demo_dir


@pytest.fixture(scope="module")
def train(demo):
    return training_rows(demo, demo / "split_setup")


def random_teacher(names, seed=0) -> TeacherLogits:
    generator = torch.Generator().manual_seed(seed)
    return TeacherLogits(names, 3 * torch.randn(len(names), len(CLASSES), generator=generator))


# --- the loss ---

def direct_kd_loss(student, labels, teacher, kd_lambda, T):
    """The formula written out in float64: lambda * CE + (1 - lambda) * T^2 * mean over batch and
    classes of p_t * (log p_t - log p_s), p at temperature T."""
    student, teacher = student.double().numpy(), teacher.double().numpy()
    batch, classes = student.shape
    ce = np.mean([-(student[i, labels[i]] - math.log(np.exp(student[i]).sum())) for i in range(batch)])
    kl_terms = 0.0
    for i in range(batch):
        p_t = np.exp(teacher[i] / T) / np.exp(teacher[i] / T).sum()
        p_s = np.exp(student[i] / T) / np.exp(student[i] / T).sum()
        kl_terms += sum(p_t[c] * (math.log(p_t[c]) - math.log(p_s[c])) for c in range(classes))
    kd = T ** 2 * kl_terms / (batch * classes)
    return kd_lambda * ce + (1 - kd_lambda) * kd, ce, kd


@pytest.mark.parametrize("kd_lambda, T", [(0.02, 2.0), (0.5, 1.0), (0.0, 3.5), (1.0, 2.0)])
def test_loss_is_the_formula(kd_lambda, T):
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(6, 10, generator=generator) * 2, torch.randn(6, 10, generator=generator) * 2
    labels = torch.tensor([0, 3, 9, 2, 2, 7])
    loss, label_loss, distill = kd_loss(student, labels, teacher_targets(teacher, T), kd_lambda, T)
    expected = direct_kd_loss(student, labels, teacher, kd_lambda, T)
    assert [loss.item(), label_loss.item(), distill.item()] == pytest.approx(expected, rel=1e-5)


def test_distillation_loss_is_the_batchmean_kl_over_the_number_of_classes():
    student, teacher = torch.randn(4, 10), torch.randn(4, 10)
    batchmean = F.kl_div(F.log_softmax(student / 2, dim=1), F.softmax(teacher / 2, dim=1), reduction="batchmean")
    assert distillation_loss(student, teacher_targets(teacher, 2.0), 2.0).item() == pytest.approx(
        4 * batchmean.item() / 10, rel=1e-5)
    # a student that equals its teacher has nothing left to learn from it
    assert distillation_loss(teacher, teacher_targets(teacher, 2.0), 2.0).item() == pytest.approx(0, abs=1e-7)


def test_loss_takes_mixed_soft_targets():
    """What a mixing augmentation passes: class probabilities as labels, mixed teacher probabilities."""
    student, teacher = torch.randn(4, 10), torch.randn(4, 10)
    labels, perm, lam = torch.tensor([1, 2, 3, 4]), torch.tensor([2, 3, 0, 1]), 0.7
    mixed_labels = lam * F.one_hot(labels, 10).float() + (1 - lam) * F.one_hot(labels[perm], 10).float()
    probs = teacher_targets(teacher, 2.0)
    loss, label_loss, _ = kd_loss(student, mixed_labels, lam * probs + (1 - lam) * probs[perm], 0.5, 2.0)
    assert label_loss.item() == pytest.approx(
        lam * F.cross_entropy(student, labels).item() + (1 - lam) * F.cross_entropy(student, labels[perm]).item())
    assert torch.isfinite(loss)


# --- the teacher file ---

def write_table(path, header, rows):
    path.write_text("\n".join("\t".join(map(str, line)) for line in [header, *rows]) + "\n")
    return path


GOOD_HEADER = ["filename", *CLASSES]


def good_rows(n=3):
    return [[f"audio/clip{i}-a.wav", *[0.5 * i + c for c in range(10)]] for i in range(n)]


def test_file_written_and_read_back_is_exact(tmp_path):
    teacher = random_teacher([f"audio/clip{i}-a.wav" for i in range(5)])
    teacher.write(tmp_path / "t.tsv")
    lines = (tmp_path / "t.tsv").read_text().splitlines()
    assert lines[0].split("\t") == GOOD_HEADER and len(lines) == 6
    again = TeacherLogits.read(tmp_path / "t.tsv")
    assert again.filenames == teacher.filenames and torch.equal(again.logits, teacher.logits)


def test_class_columns_are_matched_by_name(tmp_path):
    header = ["filename", *reversed(CLASSES)]
    path = write_table(tmp_path / "t.tsv", header, [["audio/x-a.wav", *range(9, -1, -1)]])
    assert TeacherLogits.read(path).lookup(["audio/x-a.wav"]).tolist() == [list(map(float, range(10)))]


@pytest.mark.parametrize("header, rows, message", [
    (GOOD_HEADER + ["extra"], [r + [1] for r in good_rows()], "column extra that a teacher file does not have"),
    (GOOD_HEADER[:-1], [r[:-1] for r in good_rows()], "lacks the column tram"),
    (GOOD_HEADER, [good_rows()[0][:5] + ["nan"] + good_rows()[0][6:]], "line 2, column park: 'nan' is not finite"),
    (GOOD_HEADER, [r[:3] + ["inf"] + r[4:] for r in good_rows()], "'inf' is not finite .*3 cells like it"),
    (GOOD_HEADER, [good_rows()[0], good_rows()[1][:2] + ["high"] + good_rows()[1][3:]],
     "line 3, column bus: 'high' is not a number"),
    (GOOD_HEADER, [good_rows()[0], good_rows()[0]], "is listed again"),
    (GOOD_HEADER, [], "no rows"),
    (["filename,airport,bus"], [["audio/x.wav,1,2"]], "not TAB-separated"),
])
def test_bad_files_are_refused_naming_file_and_flag(tmp_path, header, rows, message):
    path = write_table(tmp_path / "bad.tsv", header, rows)
    with pytest.raises(DataError, match=f"^--teacher_logits: {path}.*{message}"):
        TeacherLogits.read(path)


def test_missing_clips_are_counted_and_named(train):
    names = train["filename"].tolist()
    teacher = random_teacher(names[3:])
    with pytest.raises(DataError, match=rf"3 of the {len(names)} training clips have no teacher logits in it "
                                        rf"\({names[0]}, {names[1]}, {names[2]}\)"):
        teacher.check_covers(names)
    random_teacher(names).check_covers(names)  # complete: no error


def test_training_refuses_an_incomplete_file_before_starting(demo, train, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random_teacher(train["filename"].tolist()[:-7]).write(tmp_path / "teacher.tsv")
    argv = ["--demo", "--demo_dir", str(demo), "--teacher_logits", "teacher.tsv", "--wandb_mode", "disabled"]
    with pytest.raises(DataError, match=f"7 of the {len(train)} training clips"):
        train_base.main(argv)
    assert not (tmp_path / "DCASE25_Task1").exists()  # refused before a run folder was made


@pytest.mark.parametrize("flags, message", [(["--kd_lambda", "1.5"], "--kd_lambda 1.5"),
                                            (["--temperature", "0"], "--temperature 0.0")])
def test_distillation_flags_out_of_range_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(build_parser("base", ""), flags)
    assert message in capsys.readouterr().err


# --- each clip gets its own teacher row in training ---

def signature(waveform):
    """Identifies a clip from its samples whatever the roll: its largest absolute sample."""
    return waveform.abs().amax(dim=-1).flatten()


@pytest.mark.parametrize("use_cache, workers, device, world", [(True, 1, None, 1), (False, 0, "s1", 1),
                                                              (False, 0, None, 2)])
@pytest.mark.slow
def test_each_training_clip_gets_its_own_teacher_row(demo, train, tmp_path, monkeypatch, use_cache, workers,
                                                     device, world):
    """Shuffled, rolled batches from the cache or the wav files, in worker processes or not, all devices
    or one device's clips (stage 2), one process's share of a distributed run: the teacher targets
    used for each clip are its own row's."""
    rows = train if device is None else of_devices(train, device)
    args = build_parser("base", "").parse_args([*SMALL_NET, "--num_workers", str(workers), "--batch_size", "8",
                                                "--n_epochs", "2", "--warmup_steps", "1", "--temperature", "1.5"])
    args.devices = 1
    cache = AudioCache.open_or_build(tmp_path / "cache", demo, rows["filename"].tolist(), 32000) if use_cache else None
    if use_cache:
        args.cache_dir = str(tmp_path / "cache")
    process = SimpleNamespace(world_size=world, global_rank=world - 1)  # the last process of the run
    loader = make_loader(demo, rows, args, train=True, trainer=process, cache=cache)
    unrolled = make_loader(demo, rows, args, train=False, cache=cache).dataset
    clip_of = {float(signature(unrolled[i][0])): unrolled.files[i] for i in range(len(unrolled))}
    assert len(clip_of) == len(rows)  # the signature tells every clip apart

    teacher = random_teacher(train["filename"].tolist())  # the whole split, as a real file holds
    seen = []

    def spy_kd_loss(student_logits, labels, teacher_probs, kd_lambda, temperature):
        seen.append(teacher_probs.clone())
        return kd_loss(student_logits, labels, teacher_probs, kd_lambda, temperature)

    class Recording(SceneClassifier):
        def training_step(self, batch, batch_idx):
            seen.append((signature(batch[0]).tolist(), list(batch[2]), list(batch[3])))
            return super().training_step(batch, batch_idx)

    monkeypatch.setattr(losses, "kd_loss", spy_kd_loss)
    prefix = f"{device}/" if device else ""
    module = Recording(**build_parts(vars(args), input_sample_rate=32000 if use_cache else 44100), config=vars(args),
                       log_prefix=prefix, teacher=teacher)
    logger = CSVLogger(tmp_path, name="logs")
    trainer = L.Trainer(max_epochs=2, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, loader)

    batches = list(zip(seen[0::2], seen[1::2]))
    share = math.ceil(len(rows) / world)
    assert len(batches) == 2 * math.ceil(share / 8)
    orders = []
    for (signatures, devices, filenames), probs in batches:
        clips = [clip_of[s] for s in signatures]  # which clip each waveform really is
        assert clips == filenames
        assert torch.allclose(probs, teacher_targets(teacher.lookup(clips), 1.5))
        assert device is None or set(devices) == {device}
        orders += clips
    epoch = len(orders) // 2
    assert len(set(orders[:epoch])) == share and set(orders) <= set(rows["filename"])
    assert world > 1 or sorted(orders[:epoch]) == sorted(rows["filename"])
    assert orders[:epoch] != orders[epoch:]  # shuffled anew every epoch
    # the label loss and the distillation loss are separate curves
    metrics = pd.read_csv(next((tmp_path / "logs").rglob("metrics.csv")))
    assert {f"{prefix}train/label_loss", f"{prefix}train/kd_loss", f"{prefix}train/loss"} <= set(metrics.columns)
    logged = metrics.dropna(subset=[f"{prefix}train/loss"])
    assert np.allclose(logged[f"{prefix}train/loss"], 0.02 * logged[f"{prefix}train/label_loss"]
                       + 0.98 * logged[f"{prefix}train/kd_loss"], rtol=1e-5)


@pytest.mark.slow
def test_kd_lambda_1_trains_exactly_like_plain_training(demo, train, tmp_path, monkeypatch):
    """Same seed: the same losses step by step, the same weights and the same test results."""
    monkeypatch.chdir(tmp_path)
    random_teacher(train["filename"].tolist()).write(tmp_path / "teacher.tsv")
    losses = []
    original_step = SceneClassifier.training_step

    def recording_step(self, batch, batch_idx):
        loss = original_step(self, batch, batch_idx)
        losses[-1].append(loss.item())
        return loss

    monkeypatch.setattr(SceneClassifier, "training_step", recording_step)
    runs = []
    common = ["--demo", "--demo_dir", str(demo), "--seed", "5", "--n_epochs", "1", "--batch_size", "16", *SMALL_NET,
              "--num_workers", "0", "--warmup_steps", "2", "--check_val_every_n_epoch", "5", "--wandb_mode", "disabled",
              "--cache_dir", ""]  # building a cache draws random numbers: only the first run would build it
    for extra in ([], ["--teacher_logits", "teacher.tsv", "--kd_lambda", "1"]):
        losses.append([])
        runs.append(train_base.main(common + extra))
    assert len(losses[0]) == math.ceil(len(train) / 16) and losses[0] == losses[1]
    assert runs[0][1] == runs[1][1]  # test results
    states = [torch.load(tmp_path / "DCASE25_Task1" / run_id / "checkpoints" / "last.ckpt", weights_only=False)
              ["state_dict"] for run_id, _ in runs]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# --- the teacher-logits command ---

def make_run(project, run_id, model: torch.nn.Module, base_channels=8):
    """A run folder with a checkpoint as the training scripts write it (network flags in hyper_parameters)."""
    save_checkpoint({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                     "hyper_parameters": {"base_channels": base_channels}},
                    project / run_id / "checkpoints" / "last.ckpt")


def randomised(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
    return model


@pytest.mark.slow
def test_ensemble_file_is_the_mean_of_its_members_and_device_teachers_route_by_device(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = tmp_path / "runs"
    container = MultiDeviceModel(randomised(Network(NetworkConfig(base_channels=8)), 1), ["b", "s1"])
    randomised(container.device_models["b"], 2)
    randomised(container.device_models["s1"], 3)
    make_run(project, "devices1", container)
    make_run(project, "general2", randomised(Network(NetworkConfig(base_channels=12)), 4), base_channels=12)
    data = ["--dataset_dir", str(demo), "--split_dir", str(demo / "split_setup"), "--project_name", str(project),
            "--num_workers", "0", "--batch_size", "16"]
    files = {}
    for runs in (["devices1"], ["general2"], ["devices1", "general2"]):
        files["+".join(runs)] = TeacherLogits.read(teacher_command.main([*runs, "--out", "+".join(runs) + ".tsv",
                                                                         *data]))
    ensemble = files["devices1+general2"]
    train, test = training_rows(demo, demo / "split_setup"), dcase25.test_rows(demo, demo / "split_setup")
    assert ensemble.filenames == train["filename"].tolist() + test["filename"].tolist()
    members = torch.stack([files[run].lookup(ensemble.filenames) for run in ("devices1", "general2")])
    assert torch.allclose(ensemble.logits, members.mean(dim=0), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(members[0], members[1], atol=1e-3)

    # the device-specific teacher: each clip through its device's model, others through the general one,
    # in evaluation mode on the unaugmented clip
    args = parse_args(build_parser("base", ""), [*data, *SMALL_NET])
    frontend = build_module(vars(args)).frontend.eval()
    container.eval()
    clips = pd.concat([train, test]).groupby("source_label").head(2)
    dataset = make_loader(demo, clips, args, train=False).dataset
    for waveform, _, device, name in (dataset[i] for i in range(len(dataset))):
        with torch.no_grad():
            features = frontend(waveform[None])
            expected = container.get_model_for_device(device)(features)
            general = container.base_model(features)
        assert torch.allclose(files["devices1"].lookup([name]), expected, rtol=1e-4, atol=1e-5), (name, device)
        assert torch.allclose(expected, general) == (device not in ("b", "s1")), (name, device)

    again = pytest.raises(SystemExit, teacher_command.main, ["general2", "--out", "general2.tsv", *data])
    assert "--overwrite" in str(again.value)
