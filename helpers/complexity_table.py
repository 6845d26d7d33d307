"""Complexity of a network as the challenge counts it, unit by unit (MACs for one 1-second clip, bytes of
the parameters as submitted):

    python -m helpers.complexity_table                          # the baseline CP-Mobile
    python -m helpers.complexity_table --student big8           # the larger 8-bit preset
    python -m helpers.complexity_table --base_channels 40       # any network flags of train_base.py

The counting itself is in helpers/outputs/complexity.py (docs/complexity.md).
"""
from helpers.outputs.complexity import (
    MAX_MACS,
    MAX_PARAM_BYTES,
    complexity_sentence,
    layer_table_markdown,
    model_complexity,
)
from helpers.setup.flags import build_parser, parse_args
from models.quantization import with_quantization
from models.registry import build_network


def main(argv=None):
    args = parse_args(build_parser("base", __doc__), argv)
    model = with_quantization(build_network(args.model, vars(args)), args.quantize)
    print(layer_table_markdown(model))
    total = model_complexity(model)
    print(f"\n{complexity_sentence(total)} (limits: {MAX_MACS:,} MACs, {MAX_PARAM_BYTES:,} bytes).")


if __name__ == "__main__":
    main()
