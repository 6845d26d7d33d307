"""The LightningModule both training stages use: the training step (augmentation, loss), the optimiser
and its schedule, validation and test per class, device and device group, and every logged curve."""
import math
from dataclasses import dataclass, fields

import lightning as L
import torch
from torch.nn.parallel import DistributedDataParallel

from helpers.base.errors import UserError
from helpers.training.augmentation import TrainingAugmentation, to_device
from helpers.training.losses import training_loss
from helpers.training.metrics import SceneDeviceAccuracy
from models.inference import infer, store_for_submission
from models.quantization import frozen_epochs, is_qat, set_qat_frozen
from models.registry import network_record

NONFINITE_CHECK_STEPS = 50  # steps between checks of the loss (each one waits for the device)


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite: training cannot go on from here."""


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor for optimiser ``step`` (0-based), the baseline's schedule: 0 -> 1 over
    ``warmup_steps``, then ``0.5 * (1 + cos(pi * progress))`` so that it reaches 0 at ``total_steps``."""
    if step < warmup_steps:
        return step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainingSettings:
    """What the optimiser, its schedule and the loss read: the flags of the same names."""
    lr: float = 0.005
    weight_decay: float = 1e-4
    warmup_steps: int = 2000
    kd_lambda: float = None
    temperature: float = None
    qat_freeze_epochs: int = None

    @classmethod
    def from_config(cls, config: dict) -> "TrainingSettings":
        return cls(**{f.name: config[f.name] for f in fields(cls) if config.get(f.name) is not None})


class SceneClassifier(L.LightningModule):
    """Trains ``model`` on waveforms; validates and tests per class, device and device group.

    It is given its parts (``helpers/training/builder.py`` makes them from the flags): the network
    ``model`` (a model that routes by device takes ``(x, devices)``), its ``frontend``, the training
    augmentation ``augment`` and the ``settings`` of the optimiser and the loss; ``config`` (the run's
    flags) is saved with its checkpoints, which also record the network's name and config under
    ``network``. With a ``teacher`` (``helpers.training.teacher_file.TeacherLogits``) the training loss is the
    distillation loss of ``--kd_lambda`` and ``--temperature``, the teacher's logits looked up by each clip's
    file name. Curves: ``<prefix>train/loss`` and its parts, ``<prefix>lr``, ``<prefix>epoch``, and every
    figure of ``SceneDeviceAccuracy`` under ``<prefix>val/`` and ``<prefix>test/``.
    """

    def __init__(self, model: torch.nn.Module, frontend: torch.nn.Module, augment: TrainingAugmentation,
                 settings: TrainingSettings, config: dict = None, log_prefix: str = "", teacher=None):
        super().__init__()
        self.save_hyperparameters(dict(config or {}))
        self.model, self.frontend, self.augment, self.settings = model, frontend, augment, settings
        self.log_prefix = log_prefix
        self.teacher = teacher
        self.val_metrics = SceneDeviceAccuracy()
        self.test_metrics = SceneDeviceAccuracy()
        self.test_results = None  # filled at the end of a test run
        self.test_confusion = None  # {device: true x predicted counts}, filled at the end of a test run
        self.first_nonfinite_step = None  # on the device while training: see record_nonfinite

    def forward(self, waveform, devices=None):
        return self.classify(self.frontend(waveform), devices)

    def classify(self, features, devices, compute=None):
        """Logits of ``self.model``; ``compute(network, batch)`` computes each network if given."""
        if getattr(self.model, "routes_by_device", False):
            return self.model(features, devices, compute)
        return self.model(features) if compute is None else compute(self.model, features)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["network"] = network_record(self.model)

    # --- training ---
    def setup(self, stage):
        # before the strategy wraps the module: DDP builds its gradient buckets and its list of buffers then
        if stage == "fit":
            self.prepare_to_fit(self.trainer.strategy.root_device)

    def prepare_to_fit(self, device: torch.device) -> None:
        """The memory layout training on ``device`` runs in, and the buffers DDP leaves alone; before any
        wrapping by a strategy."""
        if device.type == "cpu":
            # oneDNN's convolutions work in channels-last memory: with the weights so, every activation follows
            # and nothing is reordered around each convolution; the values and checkpoints are the same
            self.model.to(memory_format=torch.channels_last)
        # the front end's and the augmentation's buffers are constants: DDP need not broadcast them every step
        constants = [f"{name}.{buffer}" for name, part in (("frontend", self.frontend), ("augment", self.augment))
                     for buffer, _ in part.named_buffers()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, constants)

    def on_fit_start(self):
        # on every process from the start: the check below is a collective that all of them must join
        self.first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=self.device)

    def on_train_batch_start(self, batch, batch_idx):
        if is_qat(self.model):  # observers and batch-norm statistics frozen for the last epochs
            n_epochs = self.trainer.max_epochs
            frozen = frozen_epochs(n_epochs, self.settings.qat_freeze_epochs)
            set_qat_frozen(self.model, self.current_epoch >= n_epochs - frozen)

    def training_loss(self, batch) -> tuple:
        """``(loss, parts)`` of a training batch: augmentation, front end, network and the loss (with the
        teacher's logits when distilling); ``parts`` are the loss's parts by name. Waits for nothing on the
        device with the default flags."""
        waveform, labels, devices, filenames = batch
        features, mix = self.augment(waveform, devices, self.frontend)
        logits = self.classify(features, devices)
        teacher_logits = None if self.teacher is None else to_device(self.teacher.lookup(filenames), logits.device)
        return training_loss(logits, labels, mix, teacher_logits, self.settings.kd_lambda, self.settings.temperature)

    def training_step(self, batch, batch_idx):
        loss, parts = self.training_loss(batch)
        self.record_nonfinite(loss)
        prefix, batch_size = self.log_prefix, len(batch[1])
        for name, value in parts.items():
            self.log(f"{prefix}train/{name}", value, batch_size=batch_size)
        self.log(f"{prefix}train/loss", loss, prog_bar=True, batch_size=batch_size)
        # numbers made on the device (a Python float would be copied there and waited for)
        self.log(f"{prefix}lr", self.on_device(self.optimizers().param_groups[0]["lr"]), batch_size=batch_size)
        self.log(f"{prefix}epoch", self.on_device(self.current_epoch), batch_size=batch_size)
        return loss

    def on_device(self, number) -> torch.Tensor:
        return torch.full((), float(number), device=self.device)

    def record_nonfinite(self, loss: torch.Tensor) -> None:
        """Remember, on the device, the first step whose loss is not finite (checked by ``stop_if_nonfinite``)."""
        if self.first_nonfinite_step is None:
            self.first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        first = self.first_nonfinite_step
        bad = ~torch.isfinite(loss.detach()) & (first < 0)
        self.first_nonfinite_step = torch.where(bad, torch.full_like(first, self.global_step), first)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if (batch_idx + 1) % NONFINITE_CHECK_STEPS == 0:
            self.stop_if_nonfinite()

    def on_train_epoch_end(self):
        self.stop_if_nonfinite()  # before the epoch's checkpoint is written (ModelCheckpoint runs after this)

    def stop_if_nonfinite(self) -> None:
        """Stop on every process together when the loss of any process was not finite: the decision is taken
        on the maximum over the processes, so none is left waiting in the next all-reduce."""
        if self.first_nonfinite_step is None:  # not fitting
            return
        step = int(self.trainer.strategy.reduce(self.first_nonfinite_step, reduce_op="max"))
        if step >= 0:
            raise NonFiniteLossError(
                f"the training loss became NaN or infinite at step {step} (epoch {self.current_epoch}). The run "
                "stopped; its last checkpoint is from the end of the last complete epoch. Lower --lr or check "
                "the data, then start again (or continue with --resume).")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.settings.lr,
                                      weight_decay=self.settings.weight_decay)
        total_steps = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, self.settings.warmup_steps, total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --- validation and test ---
    def validation_step(self, batch, batch_idx):
        waveform, labels, devices, _ = batch
        self.val_metrics.update(self(waveform, devices), labels, devices)

    def on_validation_epoch_end(self):
        self._log_results("val", self.val_metrics.compute())
        self.val_metrics.reset()

    def on_test_start(self):
        store_for_submission(self.model)

    def test_step(self, batch, batch_idx):
        waveform, labels, devices, _ = batch
        self.test_metrics.update(self.inference_logits(waveform, devices), labels, devices)

    @torch.no_grad()
    def inference_logits(self, waveform, devices=None):
        """Float32 logits as at inference, once ``store_for_submission`` has been applied: 16-bit inputs and
        parameters, computed the fastest way of this machine (``models/inference.py``), never under a
        training autocast."""
        with torch.autocast(waveform.device.type, enabled=False):
            features = self.frontend(waveform.float()).half()
            return self.classify(features, devices, compute=infer)

    def on_test_epoch_end(self):
        self.test_results = self.test_metrics.compute()
        self.test_confusion = self.test_metrics.confusion_counts()
        self._log_results("test", self.test_results)
        self.test_metrics.reset()

    def _log_results(self, stage, results):
        if self.trainer.sanity_checking:
            return
        # the values are already reduced over all processes by torchmetrics; clip counts go to the result
        # files, not to the curves
        self.log_dict({f"{self.log_prefix}{stage}/{name}": value for name, value in results.items()
                       if not name.startswith("count.")}, rank_zero_only=True)
