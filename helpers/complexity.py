"""Model complexity as the challenge counts it: MACs for one 1-second clip (torchinfo) and
parameter memory in bytes, taken from each parameter's stored dtype (fp32 4, fp16 2, int8 1)."""
import copy

import torch
import torchinfo

from models.cp_mobile import ConvNormActivation

MAX_MACS = 30_000_000
MAX_PARAM_BYTES = 128_000


def parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def model_complexity(model: torch.nn.Module, input_shape=(1, 1, 256, 65)) -> dict:
    """``{"macs", "params", "param_bytes"}``, with the bytes counted as stored at inference (16-bit)."""
    summary = torchinfo.summary(copy.deepcopy(model).float().cpu(), input_size=input_shape, verbose=0)
    fp16 = copy.deepcopy(model).half()
    return {"macs": int(summary.total_mult_adds), "params": int(summary.total_params),
            "param_bytes": parameter_bytes(fp16)}


def within_limits(complexity: dict) -> bool:
    return complexity["macs"] <= MAX_MACS and complexity["param_bytes"] <= MAX_PARAM_BYTES


def over_limits_warning(complexity: dict):
    """One warning that names each limit ``complexity`` exceeds and by how much; None within the limits."""
    excess = []
    for key, limit, unit in (("macs", MAX_MACS, "MACs per 1-second clip"),
                             ("param_bytes", MAX_PARAM_BYTES, "bytes of 16-bit parameters")):
        if complexity[key] > limit:
            over = complexity[key] - limit
            excess.append(f"{complexity[key]:,} {unit}, {over:,} ({over / limit:.0%}) over the limit of {limit:,}")
    if not excess:
        return None
    return ("WARNING: this model exceeds the complexity limits of the challenge: " + "; ".join(excess) + ". "
            "Training it is allowed (it may serve as a teacher for knowledge distillation), but "
            "train_device_specific.py --evaluate and export_submission.py will refuse it.")


def layer_table(model: torch.nn.Module, input_shape=(1, 1, 256, 65)) -> list:
    """Per-unit rows ``(name, layer, input_shape, params, macs)``: each conv-norm-activation unit and each
    layer of the head, as in the organisers' complexity table."""
    model = copy.deepcopy(model).float().cpu()
    summary = torchinfo.summary(model, input_size=input_shape, verbose=0, depth=100)
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
    lines = ["| Model | MACs | Params | Parameter bytes (16-bit) | Within limits |", "|---|---:|---:|---:|---|"]
    for name, c in per_model.items():
        ok = "yes" if within_limits(c) else "NO"
        lines.append(f"| {name} | {c['macs']:,} | {c['params']:,} | {c['param_bytes']:,} | {ok} |")
    return "\n".join(lines)


def main():
    """Print the complexity table of the default network (used for the README)."""
    from models.cp_mobile import Network
    model = Network()
    total = model_complexity(model)
    print(layer_table_markdown(model))
    print(f"\n{total['params']:,} parameters, {total['macs']:,} MACs per 1-second clip, "
          f"{total['param_bytes']:,} bytes of 16-bit parameters "
          f"(limits: {MAX_MACS:,} MACs, {MAX_PARAM_BYTES:,} bytes).")


if __name__ == "__main__":
    main()
