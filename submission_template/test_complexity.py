"""Complexity check of a submission module, before submitting:

    python test_complexity.py --submission_name Lastname_INST_task1 --submission_index 1

Prints, for every device model and for the general model (used by every device without its own
model), the MACs for the dummy 1-second clip and the parameter memory in bytes as stored; writes
``predictions/<label>_<index>/complexity.json`` and exits with status 1 when a limit is exceeded.
"""
import argparse
import copy
import difflib
import importlib
import json
import os
import sys
from importlib import resources

import torch
import torchinfo

MAX_MACS = 30_000_000  # per device model, for one 1-second clip
MAX_PARAMS_MEMORY = 128_000  # bytes, counted from each parameter's stored dtype
# bytes per stored number by dtype, as the organisers' check counts model.parameters()
DTYPE_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1, torch.uint8: 1,
               torch.qint8: 1, torch.quint8: 1, torch.int32: 4}
# the device ids the organisers check: every one must map to a model within the limits
DEVICE_IDS = ["a", "b", "c"] + [f"s{i}" for i in range(1, 11)] + ["unknown"]


def import_submission(name: str, index: int):
    module_path = f"{name}.{name}_{index}"
    try:
        return importlib.import_module(module_path)
    except ImportError as err:
        raise SystemExit(f"Could not import {module_path} ({err}). Install the package first "
                         "(pip install . in the package folder) and check --submission_name and "
                         "--submission_index.") from err


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters as stored (int8 weights of an 8-bit model count 1 byte each)."""
    unknown = {str(p.dtype) for p in model.parameters() if p.dtype not in DTYPE_BYTES}
    if unknown:
        raise SystemExit(f"Parameters of dtype {', '.join(sorted(unknown))} cannot be counted; the check knows "
                         f"{', '.join(str(d) for d in DTYPE_BYTES)}.")
    return sum(p.numel() * DTYPE_BYTES[p.dtype] for p in model.parameters())


def macs(model: torch.nn.Module, input_shape) -> int:
    """Multiply-accumulate operations of one forward pass (torchinfo, on a 32-bit copy: ``.float()`` casts
    floating-point parameters only, so int8 weights stay int8 and are counted like float ones)."""
    summary = torchinfo.summary(copy.deepcopy(model).float().cpu(), input_size=tuple(input_shape), verbose=0,
                                device="cpu")
    return int(summary.total_mult_adds)


def complexity_report(api) -> dict:
    """MACs and parameter bytes of the model behind every device id, and of the general model."""
    model = api.load_model()
    with resources.as_file(resources.files(f"{api.__package__}.resources") / "dummy.wav") as dummy:
        input_shape = tuple(api.load_inputs([str(dummy)], ["a"], model)[0].shape)
    general = api.get_model_for_device(model, "unknown")
    measured = {}  # each distinct model once
    per_device = {}
    for device_id in DEVICE_IDS:
        submodel = api.get_model_for_device(model, device_id)
        if id(submodel) not in measured:
            measured[id(submodel)] = {"MACs": macs(submodel, input_shape), "Params": parameter_bytes(submodel)}
        per_device[device_id] = {**measured[id(submodel)],
                                 "model": "general" if submodel is general else device_id}
    own = {d: c for d, c in per_device.items() if c["model"] == d}
    general_entry = {k: v for k, v in per_device["unknown"].items() if k != "model"}
    models = {**{d: {k: c[k] for k in ("MACs", "Params")} for d, c in own.items()}, "general": general_entry}
    ok = all(c["MACs"] <= MAX_MACS and c["Params"] <= MAX_PARAMS_MEMORY for c in models.values())
    return {"input_shape": list(input_shape), "models": models, "per_device": per_device,
            "max_MACs": max(c["MACs"] for c in models.values()),
            "max_Params": max(c["Params"] for c in models.values()),
            "limits": {"MACs": MAX_MACS, "Params": MAX_PARAMS_MEMORY}, "within_limits": ok}


def print_report(report: dict) -> None:
    print(f"Model complexity per device model (input {report['input_shape']}, one 1-second clip); "
          f"limits {MAX_MACS:,} MACs, {MAX_PARAMS_MEMORY:,} parameter bytes")
    print(f"{'model':>8} | {'MACs':>12} | {'Param bytes':>11} | ok  | devices")
    for name, c in report["models"].items():
        users = [d for d, e in report["per_device"].items() if e["model"] == name]
        ok = c["MACs"] <= MAX_MACS and c["Params"] <= MAX_PARAMS_MEMORY
        print(f"{name:>8} | {c['MACs']:>12,} | {c['Params']:>11,} | {'yes' if ok else 'NO ':3} | {', '.join(users)}")


def parse_flags(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """The flags as written in full (the parser is made with allow_abbrev=False): a mistyped or shortened
    flag is refused, naming the flag it resembles, instead of being taken for another one."""
    argv = sys.argv[1:] if argv is None else list(argv)
    known = list(parser._option_string_actions)
    hints = []
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            similar = [k for k in known if k.startswith(flag)] or difflib.get_close_matches(flag, known, n=3)
            hints.append(f"{flag}" + (f" (did you mean {' or '.join(similar)}?)" if similar else ""))
    if hints:
        parser.error("unrecognized arguments: " + ", ".join(hints))
    return parser.parse_args(argv)


def write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--submission_name", type=str, required=True, help="e.g. Lastname_INST_task1")
    parser.add_argument("--submission_index", type=int, required=True, help="1 to 4")
    args = parse_flags(parser, argv)
    api = import_submission(args.submission_name, args.submission_index)
    report = complexity_report(api)
    print_report(report)
    path = os.path.join("predictions", f"{args.submission_name}_{args.submission_index}", "complexity.json")
    write_json(path, report)
    print(f"Saved complexity info to: {path}")
    if not report["within_limits"]:
        print("FAILED: a model exceeds the complexity limits; this submission would be rejected.", file=sys.stderr)
        return 1
    print("All models are within the limits.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
