"""Command-line flags shared by both training scripts, with the organisers' names and defaults."""
import argparse
import difflib
import os
import shlex
import sys

# Stage-specific defaults, as in the organisers' two scripts.
STAGE_DEFAULTS = {
    "base": dict(experiment_name="Baseline_general", n_epochs=150, lr=0.005, warmup_steps=2000, mixstyle_p=0.4),
    "device": dict(experiment_name="Baseline_multi_device", n_epochs=50, lr=5e-4, warmup_steps=200,
                   mixstyle_p=0.0),
}

# --demo scales the recipe down to the demo set (about 1,400 training clips) so it ends in minutes.
# Flags given on the command line still win.
DEMO_DEFAULTS = {
    "base": dict(n_epochs=12, batch_size=64, warmup_steps=60, check_val_every_n_epoch=4, num_workers=2,
                 cache_dir="cache"),
    "device": dict(n_epochs=6, batch_size=32, warmup_steps=10, check_val_every_n_epoch=3, num_workers=2,
                   cache_dir="cache"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description (the usage examples) as written and adds each flag's default once: not
    where the help text already speaks of its default, and not for switches or flags without one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.default is False:
            return text
        default = action.default
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class StrictParser(argparse.ArgumentParser):
    """An ArgumentParser that takes flags only as written in full. argparse would take ``--n_epoch 3``
    for ``--n_epochs 3`` (and ``--train_device a`` for ``--train_devices a``); here an abbreviated or
    mistyped flag is refused, with the flag it resembles."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        known = list(self._option_string_actions)
        # unknown flags first: their hint matters more than a missing required flag they may be meant for
        mistyped = [token for token in args if token.startswith("--") and token.split("=", 1)[0] not in known]
        if mistyped:
            self.error(unknown_flags_message(mistyped, known))
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(unknown_flags_message(unknown, known))
        return parsed


def unknown_flags_message(unknown, known_flags) -> str:
    """``unrecognized arguments: ...`` with a 'did you mean' hint for each flag like a known one."""
    hints = []
    for token in unknown:
        flag = token.split("=", 1)[0]
        if not flag.startswith("--"):
            continue
        longer = [known for known in known_flags if known.startswith(flag)]
        similar = longer or difflib.get_close_matches(flag, known_flags, n=3, cutoff=0.75)
        if similar:
            hints.append(f"{flag}: did you mean {' or '.join(similar)}?")
    message = "unrecognized arguments: " + " ".join(unknown)
    if hints:
        message += " (flags must be written in full; " + "; ".join(hints) + ")"
    return message


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
    general.add_argument("--num_workers", type=int, default=8, help="DataLoader worker processes")
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
    general.add_argument("--wandb_mode", choices=["online", "offline", "disabled"], default=None,
                         help="default: online when wandb has credentials, otherwise offline")

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

    model = parser.add_argument_group("network")
    model.add_argument("--n_classes", type=int, default=10, help="number of scene classes")
    model.add_argument("--in_channels", type=int, default=1, help="input channels of the network")
    model.add_argument("--base_channels", type=int, default=32, help="network width: channels of the first stage")
    model.add_argument("--channels_multiplier", type=float, default=1.8, help="width growth from stage to stage")
    model.add_argument("--expansion_rate", type=float, default=2.1, help="width inside a block")

    train = parser.add_argument_group("training")
    train.add_argument("--n_epochs", type=int, help="training epochs (in stage 2: per device)")
    train.add_argument("--batch_size", type=int, default=256, help="clips per batch")
    train.add_argument("--mixstyle_p", type=float, help="probability of Frequency-MixStyle per batch")
    train.add_argument("--mixstyle_alpha", type=float, default=0.3, help="Beta parameter of Frequency-MixStyle")
    train.add_argument("--weight_decay", type=float, default=0.0001, help="AdamW weight decay")
    train.add_argument("--roll_sec", type=float, default=0.1, help="maximal waveform roll in seconds")
    train.add_argument("--lr", type=float, help="peak learning rate (AdamW, warm-up then cosine to 0)")
    train.add_argument("--warmup_steps", type=int, help="steps of linear learning-rate warm-up")

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
    parser.set_defaults(_stage=stage)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse flags; with ``--demo``, the demo defaults replace the ones not given explicitly."""
    args = parser.parse_args(argv)
    if args.demo:
        parser.set_defaults(**DEMO_DEFAULTS[args._stage])
        args = parser.parse_args(argv)
        args.dataset_dir = args.dataset_dir or args.demo_dir
        if args.split_dir == parser.get_default("split_dir"):
            args.split_dir = os.path.join(args.dataset_dir, "split_setup")
    args.devices = int(args.devices) if args.devices.isdigit() else args.devices
    return args


def group_flags(parser: argparse.ArgumentParser, title: str) -> list:
    """The flags of the argument group ``title`` ("network", "front end", ...) of ``build_parser``."""
    group = next(g for g in parser._action_groups if g.title == title)
    return [action.dest for action in group._group_actions]


def command_line(script: str, leading, args, flags, defaults: argparse.ArgumentParser) -> str:
    """``python <script> <leading ...>`` followed by each of ``flags`` whose value in ``args`` differs from its
    default in ``defaults``: the next command of a run, carrying the settings it must share with it."""
    command = ["python", script, *map(str, leading)]
    for flag in flags:
        value = getattr(args, flag, None)
        if value is not None and value != defaults.get_default(flag):
            command += [f"--{flag}", str(value)]
    return shlex.join(command)


def model_flags(parser: argparse.ArgumentParser) -> list:
    """The flags that define the model and its input: a later command on the same run must repeat them."""
    return ["orig_sample_rate"] + group_flags(parser, "network") + group_flags(parser, "front end")
