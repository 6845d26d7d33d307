"""The network stage 1 trains: the general model of ``--init_ckpt``, or a fresh network of the flags."""
from helpers.setup.checkpoints import resolve_checkpoint
from helpers.setup.console import rank_zero_print
from helpers.setup.model_loader import load_general_model
from helpers.setup.network_flags import set_network_flags, written_network_flags
from models.quantization import with_quantization
from models.registry import build_network, network_record


def start_model(args):
    """The general model of ``--init_ckpt``, or a fresh network of the flags with its starting weights (a
    network that has pretrained ones: ``--pretrained``). None for a resumed run, which continues from its
    own checkpoint."""
    if args.resume:
        return None
    if args.init_ckpt:
        init_path = resolve_checkpoint(args.init_ckpt, args.project_name)
        model, _ = load_general_model(init_path, written_network_flags(args), args.ckpt_prefix, args.quantize)
        set_network_flags(args, network_record(model))  # the run's flags describe the network it trains
        rank_zero_print(f"Starting from the general model of {init_path}.")
        return model
    model = build_network(args.model, vars(args))
    if hasattr(model, "load_pretrained_weights"):
        rank_zero_print(model.load_pretrained_weights())
    return with_quantization(model, args.quantize)
