"""The steps both training scripts share, which they call in their recipe's order: seeding; the checks
before anything is written (the model's complexity, the data, the audio, the augmentation, the teacher
file); the run id, new or continued (a finished run is left as it is); the logger and the Trainers; the
loaders; and after the final test the results, the figures and the next commands. Each step takes what
it needs and returns what it makes (``Inputs``, ``Run``, the logger)."""
from dataclasses import dataclass
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
from helpers.setup.trainer import log_interval, make_trainer
from helpers.training.teacher_file import read_teacher_logits
from models.registry import build_frontend

NEXT_COMMANDS = {  # what a finished run of each stage prints at its end
    "base": lambda args, run_id: "Fine-tune one model per device with:\n  " + stage2_command(args, run_id),
    "device": evaluation_commands,
}


@dataclass(frozen=True, eq=False)  # DataFrames have no == of one truth value: compared by identity
class Inputs:
    """The checked data of a run: its folder, the rows of the 25 % split (``train``) and of the test split
    (``test``), and the teacher's logits (None without ``--teacher_logits``)."""
    dataset_dir: Path
    train: object
    test: object
    teacher: object


@dataclass(frozen=True)
class Run:
    """The run taken: its id and folder, the checkpoint it continues from (None for a new run), and the
    results of a run that has finished already (None otherwise)."""
    run_id: str
    run_dir: Path
    resume_from: Path | None
    finished: dict | None


class Stage:
    """One run of a training script (``name``: ``base`` for stage 1, ``device`` for stage 2) with its flags
    ``args``; its steps take their inputs and return their results."""

    def __init__(self, args, name: str):
        self.args, self.name = args, name
        if args.seed is not None:
            L.seed_everything(args.seed, workers=True)
        self.input_rate = input_sample_rate(args)  # the rate the audio reaches the front end at
        origins = getattr(args, "origins", None)
        if origins is not None and origins.training_defaults:
            rank_zero_print(f"Training defaults of {origins.network}: "
                            + ", ".join(f"--{k} {v}" for k, v in origins.training_defaults.items())
                            + " (a flag given on the command line wins).")
        self._caches = {}  # the audio caches opened, by data folder and file names

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

    def check_inputs(self, teacher_devices=None) -> Inputs:
        """The run's ``Inputs``, once meta.csv, the split files, every audio file's header, the augmentation
        flags and the teacher file (covering the training clips of ``teacher_devices``, default all) have
        been checked; a problem ends the script here."""
        args = self.args
        dataset_dir = prepare_dataset_dir(args)
        train, test = training_rows(dataset_dir, args.split_dir, args.subset), test_rows(dataset_dir, args.split_dir)
        check_audio(args, dataset_dir, train, test)
        check_augmentation(args)
        taught = train if teacher_devices is None else train[train["source_label"].isin(teacher_devices)]
        teacher = read_teacher_logits(args.teacher_logits, taught)
        if teacher is not None:
            rank_zero_print(f"Distilling from {args.teacher_logits} ({len(teacher)} clips): loss = "
                            f"{args.kd_lambda} * label loss + {1 - args.kd_lambda:g} * distillation loss at "
                            f"temperature {args.temperature}.")
        return Inputs(dataset_dir, train, test, teacher)

    def start(self) -> Run:
        """``take_run``, then the run recorded (``record_run``)."""
        run = self.take_run()
        self.record_run(run)
        return run

    def take_run(self) -> Run:
        """The ``Run``: its id (new, or the run to continue) and the checkpoint to continue from; nothing is
        written. A run that has finished already is said, and nothing is changed."""
        run_id, resume_from = take_run_id(self.args, self.name)
        run_dir = Path(self.args.project_name) / run_id
        results = finished_results(self.args.project_name, run_id)
        if resume_from is None or results is None:
            return Run(run_id, run_dir, resume_from, None)
        rank_zero_print(f"Run {run_id} has finished already (results: {run_dir / 'results.md'}); nothing "
                        "was changed. Start a new run without --resume, or go on from it.\n"
                        + NEXT_COMMANDS[self.name](self.args, run_id))
        return Run(run_id, run_dir, resume_from, results)

    def record_run(self, run: Run) -> None:
        """The run's ``run.json``: from here on the run has a folder."""
        record_run(self.args.project_name, run.run_id, self.name)

    def open_logger(self, run: Run, config: dict = None):
        """The run's logger (Weights & Biases or CSV), with ``config`` added to the run's flags."""
        logger, _ = make_logger(self.args, run.run_id)
        if config:
            logger.log_hyperparams(config)
        return logger

    def checkpoint_path(self, run: Run, name: str = "last") -> Path:
        return checkpoint_dir(self.args.project_name, run.run_id) / f"{name}.ckpt"

    def trainer(self, run: Run, logger, inputs: Inputs, train_rows, checkpoint_name="last",
                selected_from=None) -> tuple:
        """``(trainer, train_loader)``: a Trainer that keeps ``checkpoints/<checkpoint_name>.ckpt`` of the run,
        and the training loader over ``train_rows`` of ``inputs`` (see ``loader``). The loader is made with
        the Trainer, as it shards by the Trainer's processes, and the Trainer logs at the interval its
        length calls for."""
        trainer = make_trainer(self.args, logger, run.run_id, checkpoint_name)
        train_loader = self.loader(inputs, train_rows, trainer, train=True, selected_from=selected_from)
        trainer.log_every_n_steps = log_interval(len(train_loader))
        return trainer, train_loader

    def tester(self, run: Run, logger) -> L.Trainer:
        """A Trainer for the final test only: it keeps no checkpoint."""
        return make_trainer(self.args, logger, run.run_id, checkpoint_name=None)

    def loader(self, inputs: Inputs, rows, trainer, train: bool = False, selected_from=None):
        """A DataLoader over ``rows`` of ``inputs``, shared among the processes of ``trainer``; with
        ``--cache_dir`` it reads the audio cache of ``selected_from`` (the rows they were taken from; default
        ``rows``), built on first use."""
        source = rows if selected_from is None else selected_from
        key = (inputs.dataset_dir, tuple(source["filename"]))  # a cache holds these files of this folder
        if key not in self._caches:
            self._caches[key] = open_cache(self.args, inputs.dataset_dir, source)
        return make_loader(inputs.dataset_dir, rows, self.args, train, trainer, self._caches[key])

    def finish(self, run: Run, logger, systems: dict, complexity: dict, **extra) -> dict:
        """After the final test of ``systems`` (row name -> tested module): ``results.json``, the figures and
        ``results.md`` in the run's folder, the tables and the next commands printed, the ``logger`` closed.
        Returns the results by system; ``extra`` goes into results.json."""
        results = {name: module.test_results for name, module in systems.items()}
        if is_rank_zero():
            confusion = {name: module.test_confusion for name, module in systems.items()}
            print("\n" + write_results(run.run_dir, run.run_id, results, complexity, confusion=confusion,
                                       flags=vars(self.args), logger=logger, **extra))
            print(f"Run id: {run.run_id}  (checkpoint: {self.checkpoint_path(run).resolve()}; "
                  f"results: {run.run_dir / 'results.md'})")
            print(NEXT_COMMANDS[self.name](self.args, run.run_id))
        close_logger(logger)
        return results
