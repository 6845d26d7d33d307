"""The flags of the networks: ``--model`` and the fields of every registered network's config, generated
from the configs (models/registry.py); setting them on parsed flags, and reading them back."""
import argparse

from models.registry import DEFAULT_NETWORK, flag_fields, make_config, networks


def stage_takes_network_from_flags(stage: str) -> bool:
    """Stage 1 builds the network from the flags; stage 2 takes it from the checkpoint it starts from."""
    return stage == "base"


def network_flags() -> dict:
    """``--<field>`` of every network config: field name -> ``{network name: dataclass field}``."""
    flags = {}
    for name, cls in networks().items():
        for field in flag_fields(cls.config_class):
            flags.setdefault(field.name, {})[name] = field
    for flag, by_network in flags.items():
        types = {type(f.default).__name__ for f in by_network.values()}
        if len(types) > 1:
            raise TypeError(f"--{flag} has defaults of different types ({', '.join(sorted(types))}) in the networks "
                            f"{', '.join(by_network)}: a flag shared by name must have one type.")
    return flags


def add_network_flags(parser: argparse.ArgumentParser, stage: str):
    from_checkpoint = not stage_takes_network_from_flags(stage)
    group = parser.add_argument_group(
        "network",
        "--model picks the network; each network takes the flags of its config (models/<network>.py). A flag that "
        "several networks share has one name and a default per network, shown as [network=default]; a flag left "
        "out takes the default of the chosen network, and a flag the chosen network does not have is an error."
        + (" Stage 2 rebuilds the network from the stage-1 checkpoint: give these flags only to check it (a value "
           "that differs from the checkpoint's is an error)." if from_checkpoint else ""))
    known = list(networks())
    group.add_argument("--model", choices=known, default=argparse.SUPPRESS if from_checkpoint else DEFAULT_NETWORK,
                       help="the network" + (" (default: the checkpoint's)" if from_checkpoint else ""))
    for flag, by_network in network_flags().items():
        field = next(iter(by_network.values()))
        defaults = ", ".join(f"{name}={_shown(f.default)}" for name, f in by_network.items())
        if isinstance(field.default, bool):
            kwargs = {"action": argparse.BooleanOptionalAction}
        elif isinstance(field.default, tuple):
            kwargs = {"nargs": "+", "type": type(field.default[0])}
        else:
            kwargs = {"type": type(field.default)}
        # no default here: apply_network_flags fills in the chosen network's own
        group.add_argument(f"--{flag}", default=argparse.SUPPRESS,
                           help=f"{field.metadata['help']} [{defaults}]", **kwargs)
    return group


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def given_network_flags(args) -> dict:
    """The network flags given on the command line (the others are absent until filled in)."""
    return {flag: getattr(args, flag) for flag in network_flags() if hasattr(args, flag)}


def written_network_flags(args) -> dict:
    """The network flags (and ``model``) written on the command line, where a checkpoint's network must agree
    with them (stage 1 fills in the others with defaults, which say nothing about a checkpoint)."""
    origins = getattr(args, "origins", None)
    written = origins.given if origins is not None else None
    present = {**given_network_flags(args), **({"model": args.model} if hasattr(args, "model") else {})}
    return present if written is None else {k: v for k, v in present.items() if f"--{k}" in written}


def apply_network_flags(args, model: str) -> None:
    """Set ``args.model`` and every flag of that network's config: the given value, else the network's
    default. A flag that only other networks have is refused (ValueError)."""
    flags = network_flags()
    given = given_network_flags(args)
    foreign = [flag for flag in given if model not in flags[flag]]
    if foreign:
        raise ValueError("; ".join(f"--{flag} is a flag of {', '.join(flags[flag])}" for flag in foreign)
                         + f", not of --model {model}: leave it out, or choose that --model.")
    args.model = model
    config = make_config(model, given)
    for field in flag_fields(type(config)):
        setattr(args, field.name, getattr(config, field.name))


def set_network_flags(args, record: dict) -> None:
    """Make ``args`` describe the network of ``record`` (``{"name", "config"}`` and ``quantize``), so
    that what a run saves and logs names the network it really trained."""
    args.model = record["name"]
    args.quantize = record.get("quantize")
    config = make_config(record["name"], record["config"])
    for field in flag_fields(type(config)):
        setattr(args, field.name, getattr(config, field.name))
