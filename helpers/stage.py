"""The steps both training scripts share, which they call in their recipe's order: seeding; the checks
before anything is written (the model's complexity, the data, the audio, the augmentation, the teacher
file); the run id, new or continued (a finished run is left as it is); the logger and the Trainers; the
loaders; and after the final test the results, the figures and the next commands."""
from pathlib import Path

import lightning as L

from dataset.dcase25 import test_rows, training_rows
from helpers.outputs.complexity import complexity_sentence, model_complexity, over_limits_warning
from helpers.outputs.results import write_results
from helpers.setup.checkpoints import checkpoint_dir
from helpers.setup.console import is_rank_zero, rank_zero_print
from helpers.setup.data import (
    check_audio,
    check_augmentation,
    input_sample_rate,
    make_loader,
    open_cache,
    prepare_dataset_dir,
)
from helpers.setup.loggers import close_logger, make_logger
from helpers.setup.next_commands import evaluation_commands, stage2_command
from helpers.setup.runs import finished_results, record_run, take_run_id
from helpers.setup.trainer import make_trainer, set_log_interval
from helpers.training.teacher_file import read_teacher_logits
from models.registry import build_frontend

NEXT_COMMANDS = {  # what a finished run of each stage prints at its end
    "base": lambda args, run_id: "Fine-tune one model per device with:\n  " + stage2_command(args, run_id),
    "device": evaluation_commands,
}


class Stage:
    """One run of a training script (``name``: ``base`` for stage 1, ``device`` for stage 2) with its flags
    ``args``. Set by the steps as they run: ``teacher``, ``run_id``, ``run_dir``, ``resume_from``, ``logger``."""

    def __init__(self, args, name: str):
        self.args, self.name = args, name
        if args.seed is not None:
            L.seed_everything(args.seed, workers=True)
        self.input_rate = input_sample_rate(args)  # the rate the audio reaches the front end at
        if getattr(args, "_training_defaults", None):
            rank_zero_print(f"Training defaults of {args._training_defaults_of}: "
                            + ", ".join(f"--{k} {v}" for k, v in args._training_defaults.items())
                            + " (a flag given on the command line wins).")
        self.teacher = self.run_id = self.run_dir = self.resume_from = self.logger = None
        self._caches = {}

    def input_shape(self) -> tuple:
        """The network's input for one 1-second clip."""
        return build_frontend(self.args.model, vars(self.args)).input_shape()

    def announce_model(self, model, sentence: bool = True) -> dict:
        """The model's complexity: said in one line (``sentence``), and a warning for a model over the limits."""
        complexity = model_complexity(model, self.input_shape())
        if sentence:
            rank_zero_print(f"Model {self.args.model}: {complexity_sentence(complexity)}.")
        network = getattr(model, "network_name", None)
        warning = over_limits_warning(complexity, network if getattr(model, "role", None) == "teacher" else None)
        if warning:
            rank_zero_print(warning)
        return complexity

    def check_inputs(self, teacher_devices=None) -> tuple:
        """``(train, test)``: the rows of the 25 % split and of the test split, once meta.csv, the split
        files, every audio file's header, the augmentation flags and the teacher file (covering the training
        clips of ``teacher_devices``, default all) have been checked; a problem ends the script here."""
        args = self.args
        self.dataset_dir = prepare_dataset_dir(args)
        train, test = training_rows(self.dataset_dir, args.split_dir, args.subset), test_rows(self.dataset_dir,
                                                                                           args.split_dir)
        check_audio(args, self.dataset_dir, train, test)
        check_augmentation(args)
        taught = train if teacher_devices is None else train[train["source_label"].isin(teacher_devices)]
        self.teacher = read_teacher_logits(args.teacher_logits, taught)
        if self.teacher is not None:
            rank_zero_print(f"Distilling from {args.teacher_logits} ({len(self.teacher)} clips): loss = "
                            f"{args.kd_lambda} * label loss + {1 - args.kd_lambda:g} * distillation loss at "
                            f"temperature {args.temperature}.")
        return train, test

    def start(self):
        """``take_run``, then the run recorded (``record_run``). Returns what ``take_run`` does."""
        finished = self.take_run()
        self.record_run()
        return finished

    def take_run(self):
        """Take the run id (new, or the run to continue) and the checkpoint to continue from; nothing is
        written. Returns the results of a run that has finished already (it is said, and nothing is
        changed), else None."""
        self.run_id, self.resume_from = take_run_id(self.args, self.name)
        self.run_dir = Path(self.args.project_name) / self.run_id
        results = finished_results(self.args.project_name, self.run_id)
        if self.resume_from is None or results is None:
            return None
        rank_zero_print(f"Run {self.run_id} has finished already (results: {self.run_dir / 'results.md'}); nothing "
                        "was changed. Start a new run without --resume, or go on from it.\n"
                        + NEXT_COMMANDS[self.name](self.args, self.run_id))
        return results

    def record_run(self) -> None:
        """The run's ``run.json``: from here on the run has a folder."""
        record_run(self.args.project_name, self.run_id, self.name)

    def open_logger(self, config: dict = None) -> None:
        """The run's logger (Weights & Biases or CSV), with ``config`` added to the run's flags."""
        self.logger, _ = make_logger(self.args, self.run_id)
        if config:
            self.logger.log_hyperparams(config)

    def checkpoint_path(self, name: str = "last") -> Path:
        return checkpoint_dir(self.args.project_name, self.run_id) / f"{name}.ckpt"

    def trainer(self, checkpoint_name="last") -> L.Trainer:
        """A Trainer that keeps ``checkpoints/<checkpoint_name>.ckpt`` of the run (none for None)."""
        return make_trainer(self.args, self.logger, self.run_id, checkpoint_name)

    def loader(self, rows, trainer=None, train: bool = False, selected_from=None):
        """A DataLoader over ``rows``; with ``--cache_dir`` it reads the audio cache of ``selected_from`` (the
        rows they were taken from; default ``rows``), built on first use. A training loader sets the
        ``trainer``'s logging interval."""
        source = rows if selected_from is None else selected_from
        if id(source) not in self._caches:
            self._caches[id(source)] = (source, open_cache(self.args, self.dataset_dir, source))
        loader = make_loader(self.dataset_dir, rows, self.args, train, trainer, self._caches[id(source)][1])
        if train and trainer is not None:
            set_log_interval(trainer, loader)
        return loader

    def finish(self, systems: dict, complexity: dict, **extra) -> dict:
        """After the final test of ``systems`` (row name -> tested module): ``results.json``, the figures and
        ``results.md`` in the run's folder, the tables and the next commands printed, the logger closed.
        Returns the results by system; ``extra`` goes into results.json."""
        results = {name: module.test_results for name, module in systems.items()}
        if is_rank_zero():
            confusion = {name: module.test_confusion for name, module in systems.items()}
            print("\n" + write_results(self.run_dir, self.run_id, results, complexity, confusion=confusion,
                                       flags=vars(self.args), logger=self.logger, **extra))
            print(f"Run id: {self.run_id}  (checkpoint: {self.checkpoint_path().resolve()}; "
                  f"results: {self.run_dir / 'results.md'})")
            print(NEXT_COMMANDS[self.name](self.args, self.run_id))
        close_logger(self.logger)
        return results
