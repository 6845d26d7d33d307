"""The precedence of the flags' defaults (helpers/setup/defaults.py): demo > network's training defaults
> stage; a flag given on the command line wins over all of them; parsing reads no files."""
import copy

from helpers.setup.defaults import DEMO, DEMO_DEFAULTS, NETWORK, STAGE, STAGE_DEFAULTS, resolve_defaults
from helpers.setup.flags import parse_args, stage2_parser

RECIPE = dict(n_epochs=25, batch_size=80, lr=1e-5, dir_p=0.6)  # a network's training defaults


def test_without_network_or_demo_the_stages_defaults_apply():
    for stage in ("base", "device"):
        assert resolve_defaults(stage, {}, False, set()) == {k: (v, STAGE) for k, v in STAGE_DEFAULTS[stage].items()}
    assert resolve_defaults("base", {}, False, set())["lr"] == (0.005, STAGE)
    assert resolve_defaults("device", {}, False, set())["lr"] == (5e-4, STAGE)


def test_the_networks_training_defaults_win_over_the_stages():
    resolved = resolve_defaults("base", RECIPE, False, set())
    assert resolved["lr"] == (1e-5, NETWORK) and resolved["n_epochs"] == (25, NETWORK)
    assert resolved["dir_p"] == (0.6, NETWORK)  # a flag the stage has no default of
    assert resolved["experiment_name"] == ("Baseline_general", STAGE)


def test_the_demos_defaults_win_over_the_networks():
    resolved = resolve_defaults("base", RECIPE, True, set())
    assert resolved["n_epochs"] == (DEMO_DEFAULTS["base"]["n_epochs"], DEMO)
    assert resolved["batch_size"] == (DEMO_DEFAULTS["base"]["batch_size"], DEMO)
    assert resolved["lr"] == (1e-5, NETWORK)
    assert resolved["cache_dir"] == ("cache", DEMO)
    assert resolve_defaults("device", {}, True, set())["n_epochs"] == (DEMO_DEFAULTS["device"]["n_epochs"], DEMO)


def test_a_flag_given_on_the_command_line_has_no_default_to_take():
    resolved = resolve_defaults("base", RECIPE, True, {"--lr", "--n_epochs", "--experiment_name"})
    assert not {"lr", "n_epochs", "experiment_name"} & set(resolved)
    assert resolved["batch_size"] == (DEMO_DEFAULTS["base"]["batch_size"], DEMO)


def test_resolving_changes_none_of_its_inputs():
    stages, demos, recipe = copy.deepcopy(STAGE_DEFAULTS), copy.deepcopy(DEMO_DEFAULTS), dict(RECIPE)
    resolve_defaults("device", recipe, True, {"--lr"})
    assert (STAGE_DEFAULTS, DEMO_DEFAULTS, recipe) == (stages, demos, RECIPE)


def test_stage_2_parsing_takes_the_network_it_is_given_and_reads_no_files(tmp_path, monkeypatch):
    """The checkpoint named by --ckpt_id does not exist: the network's recipe applies all the same."""
    monkeypatch.chdir(tmp_path)
    args = parse_args(stage2_parser(""), ["--ckpt_id", "no_such_run", "--lr", "3e-5"], network="passt")
    assert (args.n_epochs, args.batch_size, args.lr, args.dir_p) == (10, 80, 3e-5, 0.0)  # DIR needs --dir_dir
    assert args.origins.network == "passt" and "--lr" in args.origins.given
    assert "lr" not in args.origins.training_defaults and args.origins.training_defaults["n_epochs"] == 10
    assert not [name for name in vars(args) if name.startswith("_")] and "origins" not in vars(args)
    plain = parse_args(stage2_parser(""), ["--ckpt_id", "no_such_run"])
    assert (plain.n_epochs, plain.lr, plain.origins.training_defaults) == (50, 5e-4, {})
    assert list(tmp_path.iterdir()) == []


def test_only_flags_are_saved_as_hyperparameters():
    from conftest import TINY_NETWORK

    from helpers.setup.flags import parse_args, stage1_parser
    from helpers.training.builder import build_module
    parser = stage1_parser("")
    args = parse_args(parser, ["--demo", "--lr", "0.01", *TINY_NETWORK])
    flags = {action.dest for action in parser._actions} | {"model"}
    saved = set(build_module(vars(args)).hparams)
    assert saved <= flags and saved == set(vars(args))
    assert "--lr" in args.origins.given and args.origins.stage == "base"
