"""Which arithmetic the stored 16-bit parameters compute in: half precision, or 32 bits on the same values.

The rules store parameters as 16-bit floats; how a machine computes on them is free. A GPU computes
in half precision. CPUs differ: on some (the AMD EPYC of the README's figures) 16-bit convolutions
are many times slower than 32-bit ones; on others (Intel Xeons with 16-bit vector units) they are
faster. So on a CPU the faster way is measured on the network itself, once per process, network
shape and thread count. Half precision is chosen only when it is clearly faster (``HALF_MARGIN``), so
a machine where both are alike keeps one choice run after run. The two ways give the same classes
except where two logits lie within 16-bit rounding of each other (the benchmark reports the agreement).
"""
import copy
import time

import torch
from torch import nn

HALF_MARGIN = 1.25  # half precision must be at least this much faster to be chosen
_decisions = {}  # (network shape, input shape, threads) -> whether half precision is faster


def _seconds(model: nn.Module, x: torch.Tensor, repeats: int = 2) -> float:
    """The best of ``repeats`` timed forward passes, after one untimed one."""
    with torch.no_grad():
        model(x)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return best


def half_is_faster(model: nn.Module, input_shape, batch_size: int = 8) -> bool:
    """Whether ``model`` (one network, not a device container) should compute in half precision on
    the device its parameters are on, for inputs ``[B, *input_shape[1:]]``: always on a GPU; on a
    CPU when measured at least ``HALF_MARGIN`` times faster than 32 bits."""
    if next(model.parameters()).device.type != "cpu":
        return True
    key = (type(model).__qualname__, tuple((name, tuple(p.shape)) for name, p in model.named_parameters()),
           tuple(input_shape[1:]), torch.get_num_threads())
    if key not in _decisions:
        x = torch.randn(batch_size, *input_shape[1:]).half()
        half_seconds = _seconds(copy.deepcopy(model).half().eval(), x)
        float_seconds = _seconds(copy.deepcopy(model).float().eval(), x.float())
        _decisions[key] = half_seconds * HALF_MARGIN < float_seconds
    return _decisions[key]
