"""The Lightning Trainer of a run: its checkpoint rewritten after every epoch, the training loss logged
often enough for short phases, a message on how to continue a stopped run, and ``--average_last``."""
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.optim.swa_utils import AveragedModel, update_bn

from helpers.setup.checkpoints import checkpoint_dir
from helpers.setup.console import quiet_console


def log_interval(train_batches: int) -> int:
    """The Trainer's ``log_every_n_steps`` for an epoch of ``train_batches``: about five times per epoch, and at
    least every 50 steps (Lightning's default interval, which alone would log nothing in a phase of fewer
    steps, such as stage 2 on a small device)."""
    return max(1, min(50, train_batches // 5))


class StopMessages(L.Callback):
    """Tells the user, when a run stops early, which checkpoint is left and how to continue."""

    def __init__(self, run_id):
        self.run_id = run_id

    def on_exception(self, trainer, module, exception):
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            print(f"\nStopped. Continue run {self.run_id} from its last checkpoint (saved after every epoch) by "
                  f"running the same command with --resume {self.run_id}")


class AverageLastEpochs(L.Callback):
    """``--average_last K``: the network's parameters averaged over the ends of the last K epochs (torch's
    ``AveragedModel``). When training ends they replace the network's own; for K > 1 its batch-norm
    statistics are then recomputed on the training data (torch's ``update_bn``, through the front end, no
    augmentation), and ``checkpoint`` is written again, so that the final test, the run's result and the
    export use the average. The average so far is in the checkpoint of every epoch: a resumed run keeps it.
    Validation during training sees the network as trained."""

    def __init__(self, k: int, checkpoint):
        self.k, self.checkpoint, self.average = k, checkpoint, None

    def setup(self, trainer, module, stage):
        if stage == "fit" and self.average is None:
            self.average = AveragedModel(module.model, use_buffers=False)

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch >= trainer.max_epochs - self.k:
            self.average.update_parameters(module.model)

    def state_dict(self) -> dict:
        return {"average": self.average.state_dict()} if self.average is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "average" in state:
            self.average.load_state_dict(state["average"])

    def on_train_end(self, trainer, module):
        if int(self.average.n_averaged) == 0:  # stopped before the last K epochs
            return
        with torch.no_grad():
            for own, averaged in zip(module.model.parameters(), self.average.module.parameters()):
                own.copy_(averaged)
        if self.k > 1:  # the statistics of the averaged weights, not of any one epoch's
            update_bn((batch[0] for batch in trainer.train_dataloader), module, device=module.device)
            average_over_processes(trainer, norm_statistics(module.model))
        trainer.save_checkpoint(self.checkpoint)


def norm_statistics(model: torch.nn.Module) -> list:
    """The running means and variances of every batch norm of ``model``."""
    return [stat for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for stat in (m.running_mean, m.running_var) if stat is not None]


def average_over_processes(trainer: L.Trainer, tensors: list) -> None:
    """Replace each tensor (in place) by its mean over the processes of a distributed run. Each process
    recomputes the statistics on its own share of equally many batches: their mean is the statistics of
    all the batches, so every process tests and saves the same model."""
    if trainer.world_size > 1:
        for tensor in tensors:
            tensor.copy_(trainer.strategy.reduce(tensor.clone(), reduce_op="mean"))


class SeedPerProcess(L.Callback):
    """``--seed`` in a distributed run: each process draws its own augmentations (roll, DIR, mixup, masks),
    from ``seed + global rank``, reproducibly. A single process keeps the stream ``seed_everything`` began."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_fit_start(self, trainer, module):
        if trainer.world_size > 1:
            L.seed_everything(self.seed + trainer.global_rank, workers=True, verbose=False)


def make_trainer(args, logger, run_id, checkpoint_name="last", **kwargs) -> L.Trainer:
    """A Trainer for this run; it keeps ``<checkpoint_name>.ckpt`` at
    ``<project_name>/<run id>/checkpoints/``, updated after every epoch (none when the name is None), and
    averages the last epochs' weights with ``--average_last``."""
    quiet_console()
    callbacks = [StopMessages(run_id)]
    if getattr(args, "seed", None) is not None:
        callbacks.append(SeedPerProcess(args.seed))
    if checkpoint_name:
        # keep one file, rewritten after every training epoch (also epochs without validation)
        checkpoint = ModelCheckpoint(dirpath=checkpoint_dir(args.project_name, run_id), filename=checkpoint_name,
                                     monitor=None, save_top_k=1, save_on_train_epoch_end=True,
                                     enable_version_counter=False)
        callbacks.append(checkpoint)
        if getattr(args, "average_last", 0):
            path = checkpoint_dir(args.project_name, run_id) / f"{checkpoint_name}.ckpt"
            callbacks.append(AverageLastEpochs(args.average_last, path))
    return L.Trainer(
        max_epochs=args.n_epochs,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=checkpoint_name is not None,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        use_distributed_sampler=False,  # make_loader shards the data itself (see there)
        precision=args.precision,
        check_val_every_n_epoch=args.check_val_every_n_epoch,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        **kwargs,
    )
