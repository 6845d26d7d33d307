"""The defaults of the flags and their precedence: the stage's (the organisers' two scripts), a network's
training defaults, the demo's; a flag given on the command line wins over all of them."""
import sys

from models.registry import networks

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
    "base": dict(n_epochs=12, batch_size=64, warmup_steps=60, check_val_every_n_epoch=4,
                 cache_dir="cache"),
    "device": dict(n_epochs=6, batch_size=32, warmup_steps=10, check_val_every_n_epoch=3,
                   cache_dir="cache"),
}

STAGE, NETWORK, DEMO = "stage", "network", "demo"  # where a default comes from


def networks_training_defaults(stage: str) -> dict:
    """``{network: {flag: default}}``: the training defaults that registered networks bring for ``stage`` (a
    class attribute ``training_defaults = {"base": {...}, "device": {...}}``, e.g. PaSST's teacher recipe)."""
    found = {name: getattr(cls, "training_defaults", {}).get(stage) for name, cls in networks().items()}
    return {name: defaults for name, defaults in found.items() if defaults}


def given_flags(argv) -> set:
    """The flags written on the command line ``argv`` (``--flag`` and ``--flag=value`` alike)."""
    return {token.split("=", 1)[0] for token in (sys.argv[1:] if argv is None else argv) if token.startswith("--")}


def resolve_defaults(stage: str, network_defaults: dict, demo: bool, given: set) -> dict:
    """``{flag: (value, source)}`` for each flag with a default that is not in ``given`` (``--flag``
    names): the demo's default (with ``demo``) wins over the network's ``network_defaults``, which win
    over the stage's; ``source`` is STAGE, NETWORK or DEMO."""
    layers = ((STAGE, STAGE_DEFAULTS[stage]), (NETWORK, network_defaults), (DEMO, DEMO_DEFAULTS[stage] if demo else {}))
    resolved = {}
    for source, defaults in layers:  # later layers win
        resolved.update({flag: (value, source) for flag, value in defaults.items()})
    return {flag: entry for flag, entry in resolved.items() if f"--{flag}" not in given}
