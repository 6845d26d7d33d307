"""Networks by name.

A network lives in its own module under ``models/``: a config dataclass and an ``nn.Module``
class decorated with ``@register_network("name", ConfigClass)``. The modules of this folder that
use the decorator are found and imported on first use, so a new file is all it takes; nothing
else lists the networks. Fields of the config made with ``flag(default, help)`` become
command-line flags ``--<field>`` (see ``helpers/setup/network_flags.py``).

A network may bring its own front end (a class method ``frontend(settings, input_sample_rate)``; the
others take the log-mel front end of the front-end flags), its starting weights (a method
``load_pretrained_weights()``, called when stage 1 starts a network afresh), and a class method
``settings_from_state(state_dict)`` that reads its config from the weights' shapes (for checkpoints that
record no settings). Checkpoints are searched for a network by its first state-dict entry (a class
attribute ``state_dict_anchor`` where building a default network to learn it is costly).

The exported submission package carries this module too and builds its network here by name.
"""
import ast
import dataclasses
import importlib
import math
from pathlib import Path

from models.frontend import LogMelFrontEnd
from models.quantization import is_int8, is_qat

DEFAULT_NETWORK = "cp_mobile"
_NETWORKS = {}  # name -> network class (with .network_name and .config_class)
_discovered = False


class NetworkError(RuntimeError):
    """A network that cannot be built or started as asked (a package missing, a weights file that does not
    fit, weights that cannot be downloaded); the message says what to do."""


def flag(default, help: str):
    """A config field that is also a command-line flag ``--<field name>``."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("a flag's default must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata={"help": help})


def register_network(name: str, config_class):
    """Class decorator: make the network available as ``--model name``. The class is built as
    ``cls(config_class(...))`` and keeps its config as ``self.config``."""
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"register_network({name!r}): {config_class!r} is not a dataclass")

    def register(cls):
        known = _NETWORKS.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"Two networks are registered as {name!r}: {known.__module__}.{known.__qualname__} "
                             f"and {cls.__module__}.{cls.__qualname__}. Give one of them another name.")
        cls.network_name = name
        cls.config_class = config_class
        _NETWORKS[name] = cls
        return cls

    return register


def _uses_register_network(path: Path) -> bool:
    """Whether a module decorates a class with ``register_network`` (read, not imported)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                func = decorator.func if isinstance(decorator, ast.Call) else decorator
                if getattr(func, "id", None) == "register_network" or getattr(func, "attr", None) == "register_network":
                    return True
    return False


def discover() -> None:
    """Import every module of this folder that registers a network (once)."""
    global _discovered
    if _discovered:
        return
    package = __name__.rpartition(".")[0]
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.name != Path(__file__).name and _uses_register_network(path):
            try:
                importlib.import_module(f"{package}.{path.stem}")
            except Exception as err:
                raise ImportError(f"{path.name} registers a network but cannot be imported "
                                  f"({type(err).__name__}: {err}); fix or remove it.") from err
    _discovered = True


def networks() -> dict:
    """All registered networks, name -> class, in file order."""
    discover()
    return dict(_NETWORKS)


def network_class(name: str):
    known = networks()
    if name not in known:
        raise LookupError(f"No network is registered as {name!r}. Known networks: {', '.join(known)} "
                       f"(one module each under models/).")
    return known[name]


def flag_fields(config_class) -> list:
    """The fields of a network config that are command-line flags."""
    return [f for f in dataclasses.fields(config_class) if "help" in f.metadata]


def _as_tuples(value):
    """JSON and argparse give lists; configs hold tuples (hashable, as the defaults)."""
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_tuples(v) for k, v in value.items()}
    return value


def make_config(name: str, settings: dict = None):
    """The config of network ``name`` from ``settings`` (a dict with any keys: flags, a checkpoint's
    hyper-parameters, a stored config); fields missing there keep the network's defaults."""
    config_class = network_class(name).config_class
    settings = settings or {}
    return config_class(**{f.name: _as_tuples(settings[f.name]) for f in dataclasses.fields(config_class)
                           if f.name in settings and settings[f.name] is not None})


def build_network(name: str, settings: dict = None):
    """A fresh network ``name`` with the config made from ``settings``."""
    return network_class(name)(make_config(name, settings))


def build_frontend(name: str, settings: dict, input_sample_rate: int = None):
    """The front end of network ``name`` for audio that arrives at ``input_sample_rate`` (default: the
    settings' ``orig_sample_rate``): the network's own, else the log-mel front end of ``settings``."""
    rate = input_sample_rate or settings.get("orig_sample_rate") or 44100
    cls = network_class(name)
    if hasattr(cls, "frontend"):
        return cls.frontend(settings, rate)
    return LogMelFrontEnd.from_settings(settings, rate)


def state_dict_anchor(name: str) -> str:
    """The first state-dict entry of network ``name`` (``in_c.0.0.weight`` for CP-Mobile): where it sits in
    a checkpoint, under whatever prefix, a network of this kind may sit."""
    cls = network_class(name)
    if not hasattr(cls, "state_dict_anchor"):
        cls.state_dict_anchor = next(iter(build_network(name).state_dict()))
    return cls.state_dict_anchor


def settings_from_state(name: str, state_dict: dict):
    """The config fields of network ``name`` that the shapes of ``state_dict`` fix (a dict), or None for a
    network that cannot read them; ValueError where the entries are not of this network."""
    reader = getattr(network_class(name), "settings_from_state", None)
    return reader(state_dict) if reader else None


def shape_of(state_dict: dict, key: str) -> tuple:
    """The shape of entry ``key``; ValueError naming it where it is missing (for ``settings_from_state``)."""
    if key not in state_dict:
        raise ValueError(f"it has no entry {key}")
    return tuple(state_dict[key].shape)


def simplest_fitting(fits, default: float, low: float, high: float) -> float:
    """The value ``v`` in [low, high] with ``fits(v)``: ``default`` if it fits, else the fitting value with
    fewest decimals (up to two) nearest to ``default``. For settings that shapes fix only up to rounding
    (CP-Mobile's channel multiplier); ValueError where none fits."""
    if fits(default):
        return default
    for step in (1.0, 0.1, 0.01):
        first, last = math.ceil(round(low / step, 6)), math.floor(round(high / step, 6))
        grid = [round(i * step, 2) for i in range(first, last + 1)]
        fitting = [v for v in grid if fits(v)]
        if fitting:
            return min(fitting, key=lambda v: (abs(v - default), v))
    raise ValueError(f"no value between {low} and {high} gives these shapes")


def network_record(model) -> dict:
    """``{"name", "config"}`` of a registered network (or of a device container's general model),
    with ``"quantize": "int8"`` for an 8-bit (quantisation-aware or converted) one: what a checkpoint
    stores so that the network can be rebuilt from it alone."""
    model = getattr(model, "base_model", model)
    name = getattr(type(model), "network_name", None)
    if name is None or not dataclasses.is_dataclass(getattr(model, "config", None)):
        raise TypeError(f"{type(model).__name__} is not a registered network that keeps its config as self.config")
    record = {"name": name, "config": dataclasses.asdict(model.config)}
    if is_qat(model) or is_int8(model):
        record["quantize"] = "int8"
    return record
