"""Model complexity as the challenge counts it: MACs for one 1-second clip (torchinfo, on a float
copy) and parameter memory in bytes, taken from each parameter's stored dtype (fp32 4, fp16 2,
int8 1), both of the model as it is submitted: 16-bit floats, or int8 convolution weights with
16-bit scales and biases for a quantisation-aware model (models/quantization.py). Counted on the CPU
(torchinfo would move its copy to a GPU, before a distributed run has chosen each process's GPU)."""
import copy

import torch
import torchinfo

from models.cp_mobile import ConvNormActivation
from models.inference import store_for_submission

MAX_MACS = 30_000_000
MAX_PARAM_BYTES = 128_000
# bytes per stored number, the organisers' table (their complexity check counts model.parameters())
DTYPE_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1, torch.uint8: 1,
               torch.qint8: 1, torch.quint8: 1, torch.int32: 4}


def _bytes_of(p: torch.Tensor) -> int:
    if p.dtype not in DTYPE_BYTES:
        raise ValueError(f"a parameter of dtype {p.dtype}: the challenge's complexity check does not count it; "
                         f"store parameters as one of {', '.join(map(str, DTYPE_BYTES))}.")
    return p.numel() * DTYPE_BYTES[p.dtype]


def parameter_bytes(model: torch.nn.Module) -> int:
    return sum(_bytes_of(p) for p in model.parameters())


def bytes_by_dtype(model: torch.nn.Module) -> dict:
    """``{"int8": bytes, "float16": bytes, ...}`` of the parameters as they are."""
    counts = {}
    for p in model.parameters():
        name = str(p.dtype).replace("torch.", "")
        counts[name] = counts.get(name, 0) + _bytes_of(p)
    return counts


def _submitted_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` as it is submitted (the model itself is not changed)."""
    return store_for_submission(copy.deepcopy(model).cpu())


def model_complexity(model: torch.nn.Module, input_shape=(1, 1, 256, 65)) -> dict:
    """``{"macs", "params", "param_bytes", "bytes_by_dtype"}`` of the model as submitted: every stored
    number at its stored width (16-bit floats; int8 for the weights of a quantised model)."""
    stored = _submitted_copy(model)
    summary = torchinfo.summary(copy.deepcopy(stored).float(), input_size=input_shape, verbose=0, device="cpu")
    return {"macs": int(summary.total_mult_adds), "params": int(summary.total_params),
            "param_bytes": parameter_bytes(stored), "bytes_by_dtype": bytes_by_dtype(stored)}


def storage_description(complexity: dict) -> str:
    """How the parameters are stored, e.g. ``16-bit`` or ``int8 and float16``."""
    kinds = list(complexity.get("bytes_by_dtype", {"float16": 0}))
    return "16-bit" if kinds == ["float16"] else " and ".join(kinds)


def complexity_sentence(complexity: dict) -> str:
    split = complexity.get("bytes_by_dtype", {})
    stored = (f"{storage_description(complexity)} parameters" if len(split) < 2 else
              "parameters as stored (" + " + ".join(f"{kind} {count:,}" for kind, count in split.items()) + ")")
    return (f"{complexity['params']:,} parameters, {complexity['macs']:,} MACs per 1-second clip, "
            f"{complexity['param_bytes']:,} bytes of {stored}")


def within_limits(complexity: dict) -> bool:
    return complexity["macs"] <= MAX_MACS and complexity["param_bytes"] <= MAX_PARAM_BYTES


def over_limits_warning(complexity: dict, teacher: str = None):
    """One warning that names each limit ``complexity`` exceeds and by how much; None within the limits.
    ``teacher``: the name of a network that is a teacher by design (it says so)."""
    excess = []
    for key, limit, unit in (("macs", MAX_MACS, "MACs per 1-second clip"),
                             ("param_bytes", MAX_PARAM_BYTES, "bytes of 16-bit parameters")):
        if complexity[key] > limit:
            over = complexity[key] - limit
            excess.append(f"{complexity[key]:,} {unit}, {over:,} ({over / limit:.0%}) over the limit of {limit:,}")
    if not excess:
        return None
    if teacher:
        return (f"Note: {teacher} is a teacher network, for knowledge distillation (docs/distillation.md): it "
                "exceeds the complexity limits of the challenge by design: " + "; ".join(excess) + ". "
                "train_device_specific.py --evaluate and export_submission.py refuse it as a submission.")
    return ("WARNING: this model exceeds the complexity limits of the challenge: " + "; ".join(excess) + ". "
            "Training it is allowed (it may serve as a teacher for knowledge distillation), but "
            "train_device_specific.py --evaluate and export_submission.py will refuse it.")


def layer_table(model: torch.nn.Module, input_shape=(1, 1, 256, 65)) -> list:
    """Per-unit rows ``(name, layer, input_shape, params, macs)``: each conv-norm-activation unit and each
    layer of the head, as in the organisers' complexity table (of the model as submitted)."""
    model = _submitted_copy(model).float()
    summary = torchinfo.summary(model, input_size=input_shape, verbose=0, depth=100, device="cpu")
    leaf_macs = {layer.layer_id: layer.macs for layer in summary.summary_list if layer.is_leaf_layer}
    input_shapes = {layer.layer_id: layer.input_size for layer in summary.summary_list}
    units = [(name, module) for name, module in model.named_modules() if isinstance(module, ConvNormActivation)]
    units += [(f"feed_forward.{i}", layer) for i, layer in enumerate(model.feed_forward)]
    rows = []
    for name, unit in units:
        params = sum(p.numel() for p in unit.parameters())
        macs = sum(leaf_macs.get(id(m), 0) for m in unit.modules())
        rows.append((name, type(unit).__name__, list(input_shapes[id(unit)]), params, macs))
    return rows


def layer_table_markdown(model: torch.nn.Module, input_shape=(1, 1, 256, 65)) -> str:
    rows = layer_table(model, input_shape)
    lines = ["| Unit | Layer | Input shape | Params | MACs |", "|---|---|---|---:|---:|"]
    for name, layer, shape, params, macs in rows:
        lines.append(f"| {name} | {layer} | {shape} | {params:,} | {macs:,} |" if params or macs
                     else f"| {name} | {layer} | {shape} | - | - |")
    total = model_complexity(model, input_shape)
    lines.append(f"| **Sum** | | | **{total['params']:,}** | **{total['macs']:,}** |")
    return "\n".join(lines)


def device_models_complexity(container, input_shape=(1, 1, 256, 65)) -> dict:
    """Complexity of the general model and of every device model of a ``MultiDeviceModel``."""
    models = {"general": container.base_model, **dict(container.device_models.items())}
    return {name: model_complexity(model, input_shape) for name, model in models.items()}


def over_limits(per_model: dict) -> list:
    """Names of the models of ``device_models_complexity`` that exceed a limit."""
    return [name for name, c in per_model.items() if not within_limits(c)]


def complexity_markdown(per_model: dict) -> str:
    storage = sorted({storage_description(c) for c in per_model.values()})
    lines = [f"| Model | MACs | Params | Parameter bytes ({', '.join(storage)}) | Within limits |",
             "|---|---:|---:|---:|---|"]
    for name, c in per_model.items():
        ok = "yes" if within_limits(c) else "NO"
        lines.append(f"| {name} | {c['macs']:,} | {c['params']:,} | {c['param_bytes']:,} | {ok} |")
    return "\n".join(lines)
