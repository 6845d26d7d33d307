"""Command-line flags shared by both training scripts, with the organisers' names and defaults."""
import argparse
import os

from models.quantization import QUANTIZE_CHOICES

# Stage-specific defaults, as in the organisers' two scripts.
STAGE_DEFAULTS = {
    "base": dict(experiment_name="Baseline_general", n_epochs=150, lr=0.005, warmup_steps=2000, mixstyle_p=0.4),
    "device": dict(experiment_name="Baseline_multi_device", n_epochs=50, lr=5e-4, warmup_steps=200,
                   mixstyle_p=0.0),
}

# --student NAME: named network presets; flags given on the command line still win.
STUDENTS = {
    # 8-bit CP-Mobile with 80,758 parameters (83,558 bytes at 8 bits, 29,791,216 MACs): too big for
    # 16 bits; stage 1 narrower (24 channels) to free MACs for wider stages 2 and 3 (72, 216)
    "big8": dict(base_channels=24, channels_multiplier=3.0, expansion_rate=1.9, quantize="int8"),
}

# --demo scales the recipe down to the demo set (about 1,400 training clips) so it ends in minutes.
# Flags given on the command line still win.
DEMO_DEFAULTS = {
    "base": dict(n_epochs=12, batch_size=64, warmup_steps=60, check_val_every_n_epoch=4, num_workers=2,
                 cache_dir="cache"),
    "device": dict(n_epochs=6, batch_size=32, warmup_steps=10, check_val_every_n_epoch=3, num_workers=2,
                   cache_dir="cache"),
}


def build_parser(stage: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    general = parser.add_argument_group("run")
    general.add_argument("--project_name", type=str, default="DCASE25_Task1",
                         help="wandb project; checkpoints go to <project_name>/<run id>/checkpoints/")
    general.add_argument("--experiment_name", type=str)
    general.add_argument("--num_workers", type=int, default=8, help="DataLoader worker processes")
    general.add_argument("--precision", type=str, default="32",
                         choices=["32", "16-mixed", "bf16-mixed", "32-true", "16", "bf16"],
                         help="Lightning precision (bf16-mixed also works on a CPU)")
    general.add_argument("--accelerator", type=str, default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    general.add_argument("--devices", type=str, default="1",
                         help="devices per node for Lightning (a number, a list like 0,1, or auto)")
    general.add_argument("--num_nodes", type=int, default=1, help="machines of a distributed run")
    general.add_argument("--strategy", type=str, default="auto", help="Lightning strategy, e.g. ddp")
    general.add_argument("--check_val_every_n_epoch", type=int, default=10)
    general.add_argument("--seed", type=int, default=None, help="seed everything (default: not seeded)")
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
    data.add_argument("--demo", action="store_true",
                      help="use the built-in synthetic demo set (written on first use) with a shortened recipe")
    data.add_argument("--demo_dir", type=str, default="demo_data", help="where the demo set lives")
    data.add_argument("--cache_dir", type=str, default=None,
                      help="decode and resample every clip once into a memory-mapped cache here, reused later")
    data.add_argument("--orig_sample_rate", type=int, default=44100)
    data.add_argument("--subset", type=int, default=25, help="training split in percent (the rules allow 25 only)")

    model = parser.add_argument_group("network")
    model.add_argument("--n_classes", type=int, default=10)
    model.add_argument("--in_channels", type=int, default=1)
    model.add_argument("--base_channels", type=int, default=32)
    model.add_argument("--channels_multiplier", type=float, default=1.8)
    model.add_argument("--expansion_rate", type=float, default=2.1)
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
    train.add_argument("--n_epochs", type=int)
    train.add_argument("--batch_size", type=int, default=256)
    train.add_argument("--mixstyle_p", type=float, help="probability of Frequency-MixStyle per batch")
    train.add_argument("--mixstyle_alpha", type=float, default=0.3)
    train.add_argument("--weight_decay", type=float, default=0.0001)
    train.add_argument("--roll_sec", type=float, default=0.1, help="maximal waveform roll in seconds")
    train.add_argument("--lr", type=float)
    train.add_argument("--warmup_steps", type=int)

    frontend = parser.add_argument_group("front end")
    frontend.add_argument("--sample_rate", type=int, default=32000)
    frontend.add_argument("--window_length", type=int, default=3072)
    frontend.add_argument("--hop_length", type=int, default=500)
    frontend.add_argument("--n_fft", type=int, default=4096)
    frontend.add_argument("--n_mels", type=int, default=256)
    frontend.add_argument("--freqm", type=int, default=48, help="frequency-masking width (mel bins)")
    frontend.add_argument("--timem", type=int, default=0, help="time-masking width (frames)")
    frontend.add_argument("--f_min", type=int, default=0)
    frontend.add_argument("--f_max", type=int, default=None)

    parser.set_defaults(**STAGE_DEFAULTS[stage])
    parser.set_defaults(_stage=stage)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse flags; with ``--demo``, the demo defaults replace the ones not given explicitly."""
    args = parser.parse_args(argv)
    if args.student:
        parser.set_defaults(**STUDENTS[args.student])
        args = parser.parse_args(argv)
    if args.demo:
        parser.set_defaults(**DEMO_DEFAULTS[args._stage])
        args = parser.parse_args(argv)
        args.dataset_dir = args.dataset_dir or args.demo_dir
        if args.split_dir == parser.get_default("split_dir"):
            args.split_dir = os.path.join(args.dataset_dir, "split_setup")
    args.devices = int(args.devices) if args.devices.isdigit() else args.devices
    if args.qat_freeze_epochs is not None and not 0 <= args.qat_freeze_epochs <= args.n_epochs:
        parser.error(f"--qat_freeze_epochs {args.qat_freeze_epochs}: give 0 to --n_epochs ({args.n_epochs}).")
    return args
