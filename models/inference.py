"""How a network is stored and computed at inference: ``store_for_submission`` puts it into the form
the rules count (16-bit parameters, or int8 convolution weights for an 8-bit network), and ``infer``
computes it; the final test, ``--evaluate`` and the exported package use both.

A GPU computes the network itself in half precision. On a CPU a copy made for speed computes it:
channels-last memory, ``CPU_BATCH`` clips at a time, ReLUs in place, in 32 bits on the stored values
with batch norm folded into the convolution before it. The arithmetic is fixed, not chosen by timing,
so that a seeded run gives the same figures every time on one machine. The ways differ only in
rounding. Measurements and the reasons: docs/speed.md.
"""
import copy
import itertools
import operator
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from models.quantization import compute_dtype, is_qat, quantize_to_int8

with warnings.catch_warnings():  # the module's TorchScript helpers warn that TorchScript is deprecated; fuse is fx
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch.fx.experimental.optimization import fuse

CPU_BATCH = 32  # clips per forward pass on a CPU: larger batches' activations fall out of the caches
_forms = weakref.WeakKeyDictionary()  # network -> (the values it was made from, the copy computing it)


def store_for_submission(model: nn.Module) -> nn.Module:
    """Put ``model`` (in place) into the form it is tested and submitted in, and return it: a
    quantisation-aware model becomes its int8 model (models/quantization.py), and every floating-point
    parameter and buffer is stored as a 16-bit float (int8 ones stay int8), as the memory limit counts."""
    if is_qat(model):
        quantize_to_int8(model)
    return model.half()


# a module or function whose output is a tensor of its own, which a ReLU after it may overwrite
FRESH_OUTPUT_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
FRESH_OUTPUT_FUNCTIONS = (operator.add, torch.add)


def relu_in_place(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Let every ReLU of ``graph`` that is the only user of a fresh tensor (the output of a convolution,
    a batch norm or a sum) overwrite it rather than write a new one (changed in place): the same values,
    one tensor less to allocate and fill (see the module docstring)."""
    modules = dict(graph.named_modules())
    for node in graph.graph.nodes:
        is_relu = ((node.op == "call_module" and type(modules[node.target]) is nn.ReLU)
                   or (node.op == "call_function" and node.target in (F.relu, torch.relu) and not node.kwargs))
        if not is_relu or len(node.args) != 1:
            continue
        source = node.args[0]
        fresh = ((source.op == "call_module" and isinstance(modules[source.target], FRESH_OUTPUT_MODULES))
                 or (source.op == "call_function" and source.target in FRESH_OUTPUT_FUNCTIONS))
        if fresh and len(source.users) == 1:
            node.op, node.target = "call_function", torch.relu_
    graph.recompile()
    return graph


def cpu_form(network: nn.Module, half: bool) -> nn.Module:
    """A copy of ``network`` (16-bit parameters as stored) that computes it on a CPU, in channels-last
    memory: in half precision on the stored values, or in 32 bits with batch norm folded; ReLUs in
    place. A network torch.fx cannot trace (control flow that depends on the data) is copied as it is."""
    form = copy.deepcopy(network).eval()
    form = form.half() if half else form.float()
    try:
        graph = torch.fx.symbolic_trace(form)
    except Exception:  # tracing fails in many ways (TraceError, TypeError, ...)
        return form.to(memory_format=torch.channels_last)
    if not half:  # each batch norm after a convolution folded into it
        graph = fuse(graph, inplace=True, no_trace=True)
    return relu_in_place(graph).to(memory_format=torch.channels_last)


def _stored_values(network: nn.Module) -> list:
    return [t.detach() for t in itertools.chain(network.parameters(), network.buffers())]


def _unchanged(kept: list, network: nn.Module) -> bool:
    """Whether ``network`` still holds the values ``kept`` (loading weights or ``.half()`` changes them)."""
    now = _stored_values(network)
    return len(now) == len(kept) and all(a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
                                         for a, b in zip(kept, now))


def inference_form(network: nn.Module) -> nn.Module:
    """What computes ``network`` on its device (see the module docstring): on a GPU the network itself;
    on a CPU its 32-bit copy, made once and remade when the stored values change."""
    if next(network.parameters()).device.type != "cpu":
        return network
    known = _forms.get(network)
    if known is None or not _unchanged(known[0], network):
        kept = [t.clone() for t in _stored_values(network)]
        known = _forms[network] = (kept, cpu_form(network, half=False))
    return known[1]


@torch.no_grad()
def run_form(form: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Float32 logits of ``form`` (what ``inference_form`` or ``cpu_form`` gives) for 16-bit features:
    on a CPU in channels-last memory, ``CPU_BATCH`` clips at a time."""
    device = next(form.parameters()).device
    x = features.to(device=device, dtype=torch.float16).to(compute_dtype(form))
    if device.type != "cpu":
        return form(x).float()
    x = x.contiguous(memory_format=torch.channels_last)
    return torch.cat([form(chunk) for chunk in x.split(CPU_BATCH)]).float()


def infer(network: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Float32 logits ``[B, n_classes]`` of ``network`` (one network, 16-bit parameters as stored, in
    eval mode) for 16-bit features ``[B, ...]``, computed as the module docstring says."""
    return run_form(inference_form(network), features)
