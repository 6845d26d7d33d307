"""--average_last K: the tested, kept and exported model is the mean of the weights at the ends of the last K
epochs, batch-norm statistics recomputed on the training data; K = 1 is no averaging; a resumed run keeps the
average. Trained here with the Trainer the scripts use (helpers/setup/trainer.py) on a tiny network."""
import lightning as L
import pytest
import torch
from conftest import TINY_NETWORK

from dataset.dcase25 import training_rows
from helpers.setup.data import make_loader
from helpers.setup.flags import parse_args, stage1_parser
from helpers.setup.trainer import make_trainer
from helpers.training.builder import build_module


class EpochWeights(L.Callback):
    """The network's parameters at the end of every training epoch, by epoch."""

    def __init__(self):
        self.by_epoch = {}

    def on_train_epoch_end(self, trainer, module):
        self.by_epoch[trainer.current_epoch] = [p.detach().clone() for p in module.model.parameters()]


class StopAtEpoch(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("stopped for the test")


def train(demo_dir, project, n_epochs, average_last, resume=False, callbacks=()):
    """``(module, args)`` after a seeded run of ``n_epochs`` (``resume``: continue the run's checkpoint)."""
    args = parse_args(stage1_parser(""), ["--dataset_dir", str(demo_dir), "--split_dir", str(demo_dir / "split_setup"),
                                          *TINY_NETWORK, "--n_epochs", str(n_epochs), "--batch_size", "16",
                                          "--num_workers", "0", "--warmup_steps", "1", "--check_val_every_n_epoch",
                                          "100", "--average_last", str(average_last), "--project_name", str(project),
                                          "--accelerator", "cpu"])
    L.seed_everything(3)
    module = build_module(vars(args))
    trainer = make_trainer(args, False, "avg", enable_progress_bar=False)
    trainer.callbacks.extend(callbacks)
    loader = make_loader(demo_dir, training_rows(demo_dir, demo_dir / "split_setup"), args, train=True)
    last = project / "avg" / "checkpoints" / "last.ckpt"
    trainer.fit(module, loader, ckpt_path=last if resume else None)
    return module, last


def parameters_of(checkpoint_path):
    state = torch.load(checkpoint_path, weights_only=True)["state_dict"]
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


def test_average_last_1_is_no_averaging(demo_dir, tmp_path):
    plain, plain_ckpt = train(demo_dir, tmp_path / "plain", 3, 0)
    one, one_ckpt = train(demo_dir, tmp_path / "one", 3, 1)
    for (name, a), b in zip(plain.model.state_dict().items(), one.model.state_dict().values()):
        assert torch.equal(a, b), name
    saved_plain, saved_one = parameters_of(plain_ckpt), parameters_of(one_ckpt)
    assert saved_plain.keys() == saved_one.keys()
    assert all(torch.equal(saved_plain[k], saved_one[k]) for k in saved_plain)


def test_average_last_3_is_the_mean_of_the_last_three_epochs(demo_dir, tmp_path):
    recorder = EpochWeights()
    module, checkpoint = train(demo_dir, tmp_path / "three", 5, 3, callbacks=[recorder])
    expected = [torch.stack(weights).mean(dim=0) for weights in zip(*(recorder.by_epoch[e] for e in (2, 3, 4)))]
    for p, mean in zip(module.model.parameters(), expected):
        assert torch.allclose(p, mean, atol=1e-6)
    assert not all(torch.equal(p, last) for p, last in zip(module.model.parameters(), recorder.by_epoch[4]))
    saved = parameters_of(checkpoint)  # the checkpoint the final test loads holds the average
    for (name, p) in module.model.named_parameters():
        assert torch.equal(saved[name], p.detach()), name
    # batch norm recomputed on the training data: 5 batches of 16 clips, so the running mean is the mean of
    # the features over the whole split, whatever the order
    stem = module.model.in_c[0]
    loader = make_loader(demo_dir, training_rows(demo_dir, demo_dir / "split_setup"), module.hparams, train=False)
    with torch.no_grad():
        features = torch.cat([module.frontend(batch[0]) for batch in loader])
        conv_out = stem[0](features)
    assert torch.allclose(stem[1].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-4)
    assert int(stem[1].num_batches_tracked) == 5


def test_a_resumed_run_keeps_the_average(demo_dir, tmp_path):
    first, second = EpochWeights(), EpochWeights()
    with pytest.raises(RuntimeError, match="stopped for the test"):
        train(demo_dir, tmp_path / "resume", 4, 3, callbacks=[first, StopAtEpoch(3)])
    module, _ = train(demo_dir, tmp_path / "resume", 4, 3, resume=True, callbacks=[second])
    assert sorted(first.by_epoch) == [0, 1, 2] and sorted(second.by_epoch) == [3]
    weights = (first.by_epoch[1], first.by_epoch[2], second.by_epoch[3])
    for p, epochs in zip(module.model.parameters(), zip(*weights)):
        assert torch.allclose(p, torch.stack(epochs).mean(dim=0), atol=1e-6)


def test_average_last_beyond_the_epochs_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(stage1_parser(""), ["--n_epochs", "3", "--average_last", "4"])
    assert "--average_last 4" in capsys.readouterr().err
