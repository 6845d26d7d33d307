"""Command-line flags of both training scripts, with the organisers' names and defaults and the flags of
every registered network (network_flags.py); parsing applies the defaults in their order (defaults.py).

``python -m helpers.setup.flags docs/flags.md`` writes every flag of both scripts to the flags page
(flags_page.py).
"""
import argparse
import os
from dataclasses import dataclass, field

from dataset.dcase25 import TRAIN_DEVICES
from helpers.base.command_line import StrictParser
from helpers.setup import flags_page
from helpers.setup.defaults import (
    DEMO_DEFAULTS,
    NETWORK,
    STAGE,
    STAGE_DEFAULTS,
    STUDENTS,
    given_flags,
    networks_training_defaults,
    resolve_defaults,
)
from helpers.setup.network_flags import add_network_flags, apply_network_flags, stage_takes_network_from_flags
from models.quantization import QUANTIZE_CHOICES
from models.registry import DEFAULT_NETWORK


def demo_help(stage: str) -> str:
    changes = " ".join(f"--{flag} {value}" for flag, value in DEMO_DEFAULTS[stage].items())
    return ("use the built-in synthetic demo set in --demo_dir (written on first use) with a shortened recipe: "
            f"{changes}, and --dataset_dir --demo_dir, --split_dir <demo_dir>/split_setup; "
            "flags given explicitly win")


def build_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = StrictParser(description=description, usage="%(prog)s [--flag VALUE ...]  (all flags: --help)")

    general = parser.add_argument_group("run")
    general.add_argument("--project_name", type=str, default="DCASE25_Task1",
                         help="wandb project; checkpoints go to <project_name>/<run id>/checkpoints/")
    general.add_argument("--experiment_name", type=str, help="wandb run name")
    general.add_argument("--num_workers", type=int, default=None,
                         help="DataLoader worker processes (default: none for the audio cache on a CPU, else 8; "
                              "capped at the available cores; why: docs/speed.md)")
    general.add_argument("--precision", type=str, default="32",
                         choices=["32", "16-mixed", "bf16-mixed", "32-true", "16", "bf16"],
                         help="Lightning precision (bf16-mixed also works on a CPU)")
    general.add_argument("--accelerator", type=str, default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    general.add_argument("--devices", type=str, default="1",
                         help="devices per node for Lightning (a number, a list like 0,1, or auto)")
    general.add_argument("--num_nodes", type=int, default=1, help="machines of a distributed run")
    general.add_argument("--strategy", type=str, default="auto", help="Lightning strategy, e.g. ddp")
    general.add_argument("--check_val_every_n_epoch", type=int, default=10, help="validation interval in epochs")
    general.add_argument("--seed", type=int, default=None,
                         help="seed Python, NumPy, torch and the data-loader workers (default: not seeded)")
    general.add_argument("--run_id", type=str, default=None,
                         help="id of the run (default: a new one); an existing run with this id is continued")
    general.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_ID",
                         help="continue a stopped run from its last checkpoint (default: the newest run of "
                              "this script under --project_name)")
    general.add_argument("--ckpt_prefix", type=str, default=None, metavar="PREFIX",
                         help="where a checkpoint (--ckpt_id, --init_ckpt, a teacher) holds several networks, "
                              "the prefix of the one to take, e.g. teacher_model. (default: the loader's choice, "
                              "which it prints)")
    general.add_argument("--wandb_mode", choices=["online", "offline", "disabled"], default=None,
                         help="default: online when wandb has credentials, otherwise offline")
    general.add_argument("--wandb_init_timeout", type=float, default=30,
                         help="seconds to wait for the wandb server when a run starts online; without an "
                              "answer the run logs offline (upload it later with wandb sync)")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset_dir", type=str, default=None,
                      help="folder with meta.csv and audio/ (default: $DCASE25_DATASET_DIR)")
    data.add_argument("--split_dir", type=str, default="split_setup",
                      help="folder with split25.csv and test.csv; missing files are downloaded")
    data.add_argument("--demo", action="store_true", help=demo_help(stage))
    data.add_argument("--demo_dir", type=str, default="demo_data", help="where the demo set lives")
    data.add_argument("--cache_dir", type=str, default=None,
                      help="decode and resample every clip once into a memory-mapped cache here, reused later")
    data.add_argument("--orig_sample_rate", type=int, default=44100, help="sample rate of the wav files")
    data.add_argument("--subset", type=int, default=25, help="training split in percent (the rules allow 25 only)")

    model = add_network_flags(parser, stage)
    model.add_argument("--student", choices=sorted(STUDENTS), default=None,
                       help="a named network preset: big8 = --base_channels 24 --channels_multiplier 3.0 "
                            "--expansion_rate 1.9 --quantize int8")

    quantization = parser.add_argument_group("quantisation (models/quantization.py)")
    quantization.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                              help="quantisation-aware training of int8 convolution weights (per output channel); "
                                   "the final test, --evaluate and the export use the int8 model")
    quantization.add_argument("--qat_freeze_epochs", type=int, default=None,
                              help="with --quantize: freeze the quantisation scales and batch-norm statistics for "
                                   "the last N epochs (default: a tenth of --n_epochs, at least 1)")

    train = parser.add_argument_group("training")
    train.add_argument("--n_epochs", type=int, help="training epochs (in stage 2: per device)")
    train.add_argument("--batch_size", type=int, default=256, help="clips per batch")
    train.add_argument("--mixstyle_p", type=float, help="probability of Frequency-MixStyle per batch")
    train.add_argument("--mixstyle_alpha", type=float, default=0.3, help="Beta parameter of Frequency-MixStyle")
    train.add_argument("--weight_decay", type=float, default=0.0001, help="AdamW weight decay")
    train.add_argument("--roll_sec", type=float, default=0.1, help="maximal waveform roll in seconds")
    train.add_argument("--lr", type=float, help="peak learning rate (AdamW, warm-up then cosine to 0)")
    train.add_argument("--warmup_steps", type=int, help="steps of linear learning-rate warm-up")
    train.add_argument("--average_last", type=int, default=0, metavar="K",
                       help="test, keep and export the average of the weights at the ends of the last K epochs, "
                            "batch-norm statistics recomputed on the training data (0: off; in stage 2 per device)")

    distillation = parser.add_argument_group("knowledge distillation (off without --teacher_logits)")
    distillation.add_argument("--teacher_logits", type=str, default=None, metavar="FILE",
                              help="TAB-separated teacher logits per clip (python -m helpers.write_teacher_logits); "
                                   "every training clip must be in it")
    distillation.add_argument("--kd_lambda", type=float, default=0.02,
                              help="weight of the label loss; 1 - kd_lambda weighs the distillation loss "
                                   "(0: pure distillation)")
    distillation.add_argument("--temperature", type=float, default=2.0,
                              help="softmax temperature of teacher and student in the distillation loss")

    augment = parser.add_argument_group("augmentation (helpers/training/augmentation.py; off by default)")
    augment.add_argument("--dir_dir", type=str, default=None,
                         help="folder of device impulse responses (audio files, any rate, length or channel count)")
    augment.add_argument("--dir_p", type=float, default=0.0,
                         help="DIR: probability that a clip of --dir_devices is convolved with an impulse response")
    augment.add_argument("--dir_devices", nargs="+", default=["a"], help="DIR: devices whose clips may be convolved")
    augment.add_argument("--mixup_alpha", type=float, default=0.0,
                         help="mixup: Beta(alpha, alpha) weights of the clip pairs (0: off)")
    augment.add_argument("--mixup_p", type=float, default=1.0, help="mixup: probability that a clip is mixed")

    frontend = parser.add_argument_group("front end")
    frontend.add_argument("--sample_rate", type=int, default=32000, help="the audio is resampled to this rate")
    frontend.add_argument("--window_length", type=int, default=3072, help="STFT window in samples")
    frontend.add_argument("--hop_length", type=int, default=500, help="STFT hop in samples")
    frontend.add_argument("--n_fft", type=int, default=4096, help="FFT size")
    frontend.add_argument("--n_mels", type=int, default=256, help="mel bands")
    frontend.add_argument("--freqm", type=int, default=48, help="frequency-masking width (mel bins)")
    frontend.add_argument("--timem", type=int, default=0, help="time-masking width (frames)")
    frontend.add_argument("--f_min", type=int, default=0, help="lowest mel frequency in Hz")
    frontend.add_argument("--f_max", type=int, default=None,
                          help="highest mel frequency in Hz (default: half the sample rate)")

    parser.set_defaults(**STAGE_DEFAULTS[stage])
    parser.stage = stage
    for name, defaults in networks_training_defaults(stage).items():  # shown where they apply
        for action in parser._actions:
            if action.dest in defaults:
                where = f"--model {name}" if stage_takes_network_from_flags(stage) else f"a {name} checkpoint"
                value = defaults[action.dest]
                action.help += f" [{where}: {value}{' with --dir_dir' if action.dest == 'dir_p' else ''}]"
    return parser


def stage1_parser(description: str) -> argparse.ArgumentParser:
    """The flags of ``train_base.py``."""
    parser = build_parser("base", description)
    parser.add_argument_group("stage 1").add_argument(
        "--init_ckpt", type=str, default=None, metavar="RUN_ID",
        help="start from the general model of this stage-1 run (or .ckpt), e.g. a float run to fine-tune with "
             "--quantize int8; training itself starts at epoch 0")
    return parser


def stage2_parser(description: str) -> argparse.ArgumentParser:
    """The flags of ``train_device_specific.py``."""
    parser = build_parser("device", description)
    stage2 = parser.add_argument_group("stage 2")
    stage2.add_argument("--ckpt_id", type=str,
                        help="stage-1 run id (or .ckpt path) to fine-tune; with --evaluate a stage-2 run id")
    stage2.add_argument("--train_devices", nargs="+", default=TRAIN_DEVICES, help="devices that get their own model")
    stage2.add_argument("--evaluate", action="store_true", help="predict the evaluation set with a stage-2 model")
    stage2.add_argument("--eval_dir", type=str, default=None, help="evaluation set (audio/, evaluation_setup/)")
    stage2.add_argument("--overwrite", action="store_true", help="replace an existing predictions folder")
    stage2.add_argument("--merge", nargs="+", metavar="RUN_ID", default=None,
                        help="combine finished stage-2 runs of different devices (independent jobs) into one "
                             "system, then run its final test")
    return parser


@dataclass(frozen=True)
class FlagOrigins:
    """Where the flags' values came from: the ``stage`` parsed for, the flags ``given`` on the command line,
    and the training defaults of ``network`` that were applied (flag -> value)."""
    stage: str
    given: frozenset
    network: str = None
    training_defaults: dict = field(default_factory=dict)


class Flags(argparse.Namespace):
    """Every flag's value as an attribute (``vars(flags)`` holds the flags and nothing else); ``origins``
    (a ``FlagOrigins``) is kept beside them."""
    __slots__ = ("origins",)


def parse_args(parser: argparse.ArgumentParser, argv=None, network: str = None) -> Flags:
    """Parse flags without reading any file (stage 2's network, whose training defaults apply, is found by a
    step of its own: ``helpers.setup.runs.network_of_run``). Flags not given take, in this order of precedence, the demo
    defaults (with ``--demo``), the training defaults of the network (``--model``, or in stage 2 ``network``),
    the stage's (``resolve_defaults``)."""
    args = parser.parse_args(argv, Flags())
    stage = parser.stage
    if stage_takes_network_from_flags(stage):
        network = args.model
    training_defaults = networks_training_defaults(stage).get(network, {})
    given = given_flags(argv)
    resolved = resolve_defaults(stage, training_defaults, args.demo, given)
    changed = {flag: value for flag, (value, source) in resolved.items() if source != STAGE}
    if changed:  # as parser defaults, so that argparse converts them by type as it does the stage's
        parser.set_defaults(**changed)
        args = parser.parse_args(argv, Flags())
    applied = {k: getattr(args, k) for k in training_defaults if resolved.get(k, (None, None))[1] == NETWORK}
    if "dir_p" in applied and not args.dir_dir:  # a recipe's DIR needs responses: off without
        args.dir_p = applied["dir_p"] = 0.0
    args.origins = FlagOrigins(stage, frozenset(given), network, applied)
    if args.demo:
        args.dataset_dir = args.dataset_dir or args.demo_dir
        if args.split_dir == parser.get_default("split_dir"):
            args.split_dir = os.path.join(args.dataset_dir, "split_setup")
    args.devices = int(args.devices) if args.devices.isdigit() else args.devices
    if args.student and getattr(args, "model", DEFAULT_NETWORK) != DEFAULT_NETWORK:
        parser.error(f"--student {args.student} is a preset of --model {DEFAULT_NETWORK}; leave it out with "
                     f"--model {args.model}, or give that network's flags and --quantize yourself.")
    if args.student:  # the preset fills in the network flags and --quantize not given on the command line
        for flag, value in STUDENTS[args.student].items():
            if getattr(args, flag, None) is None:
                setattr(args, flag, value)
    if stage_takes_network_from_flags(stage):
        try:
            apply_network_flags(args, args.model)
        except ValueError as err:
            parser.error(str(err))
    if not 0.0 <= args.kd_lambda <= 1.0:
        parser.error(f"--kd_lambda {args.kd_lambda}: must lie between 0 (pure distillation) and 1 (labels only).")
    if not args.temperature > 0:
        parser.error(f"--temperature {args.temperature}: must be greater than 0.")
    if not 0 <= args.average_last <= args.n_epochs:
        parser.error(f"--average_last {args.average_last}: give 0 (off) to --n_epochs ({args.n_epochs}).")
    if args.qat_freeze_epochs is not None and not 0 <= args.qat_freeze_epochs <= args.n_epochs:
        parser.error(f"--qat_freeze_epochs {args.qat_freeze_epochs}: give 0 to --n_epochs ({args.n_epochs}).")
    return args


def script_parsers() -> dict:
    """``{script: parser}`` of both training scripts, as the flags page lists them."""
    return {"train_base.py": stage1_parser(""), "train_device_specific.py": stage2_parser("")}


if __name__ == "__main__":  # python -m helpers.setup.flags docs/flags.md
    flags_page.main(script_parsers())
