"""Running the project's steps on fake CUDA tensors, on a machine without a GPU (PyTorch's fake-tensor
mode), for tests/test_fake_cuda.py. Every private PyTorch API the test needs is used here and only here;
``MISSING`` names what the installed torch lacks (the test then skips).

In ``on_fake_gpu`` the module's parameters and buffers are fake CUDA tensors: they carry a device, a
shape and a dtype but no values, so every operation checks its devices (a CPU tensor of more than one
element meeting a CUDA one raises, as on a GPU) and dtypes (autocast applies as on a GPU) without a GPU.
CPU tensors stay real: what the code computes on the CPU (random choices, Python decisions) runs as on
a GPU machine. ``HostSyncs`` counts what would make the host wait for a GPU: reading a CUDA tensor's
value (``.item()``, ``bool()``, ``if tensor:``), a size known only from the values (``nonzero``, a boolean
index: fake tensors cannot have such a size, so the operation raises after it is counted), and copies
between the CPU and the GPU that block (to or from pageable memory without ``non_blocking``). Backward
passes do not run on fake tensors: the steps are checked forwards.
"""
import contextlib

import torch

try:
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
    from torch.nn.utils.stateless import _reparametrize_module
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves
    MISSING = None
except ImportError as err:  # private APIs: a torch without them skips the test
    MISSING = f"this torch lacks the fake-tensor APIs the test needs ({err})"
    TorchDispatchMode = object

# ops without a fake kernel in torch: their output has the input's shape, device and dtype
SHAPE_PRESERVING_OPS = ("_sample_dirichlet",)
_registered = []


def _register_fake_kernels() -> None:
    if _registered:
        return
    library = torch.library.Library("aten", "IMPL")
    for name in SHAPE_PRESERVING_OPS:
        library.impl(name, lambda x, *args, **kwargs: torch.empty_like(x), "Meta")
    library.impl("fake_quantize_per_channel_affine_cachemask",
                 lambda x, *args, **kwargs: (torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)), "Meta")
    _registered.append(library)  # the registration lasts while the library object lives


def _is_fake(value) -> bool:
    return isinstance(value, FakeTensor)


def _on_cuda(value) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type == "cuda"


class HostSyncs(TorchDispatchMode):
    """Counts, by kind, the operations that would make the host wait for the GPU; runs every operation
    that involves no fake tensor for real on the CPU. A value read from a fake tensor is answered with 1
    (true: "finite", "enabled", "some clip chosen"), so that the code goes on."""

    def __init__(self):
        super().__init__()
        self.counts = {}
        self.paused = False  # while the test itself puts data on the fake GPU (Lightning does it from pinned memory)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _count(self, kind: str) -> None:
        if not self.paused:
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = tree_leaves((args, kwargs))
        device = kwargs.get("device")
        if not any(_is_fake(x) for x in leaves) and (device is None or torch.device(device).type == "cpu"):
            with unset_fake_temporarily():  # CPU work is real, as on a GPU machine
                return func(*args, **kwargs)
        name = func.__name__.split(".")[0]
        if name == "_local_scalar_dense" and _on_cuda(args[0]):
            self._count("value read (.item(), bool(), if)")
            return True if args[0].dtype == torch.bool else 1
        if name in ("nonzero", "masked_select") and _on_cuda(args[0]):
            self._count("size from values (nonzero)")
        elif name in ("index", "index_put", "index_put_") and _on_cuda(args[0]) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in tree_leaves(args[1])):
            self._count("size from values (boolean index)")
        elif name in ("_to_copy", "copy_"):
            source, target = (args[0], device) if name == "_to_copy" else (args[1], args[0].device)
            target = torch.device(target) if target is not None else source.device
            crosses = {source.device.type, target.type} == {"cpu", "cuda"}
            pinned = source.device.type == "cpu" and not _is_fake(source) and source.is_pinned()
            waits = not (kwargs.get("non_blocking") and (pinned or target.type == "cuda"))
            if crosses and source.numel() > 0 and waits:
                self._count("blocking copy between CPU and GPU")
        return func(*args, **kwargs)


@contextlib.contextmanager
def autocast_on_cuda(dtype):
    """CUDA autocast at ``dtype`` (None: off), switched on without a GPU (``torch.autocast`` refuses that)."""
    if dtype is None:
        yield
        return
    was_enabled, was_dtype = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", was_enabled)
        torch.set_autocast_dtype("cuda", was_dtype)
        torch.clear_autocast_cache()


class FakeGPU:
    """A fake-tensor mode with fake CUDA tensors and real CPU ones; ``module(m)`` puts ``m``'s parameters
    and buffers on the fake GPU for a ``with`` block, ``tensor(t)`` makes a fake CUDA copy of ``t``."""

    def __init__(self):
        _register_fake_kernels()
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.syncs = HostSyncs()

    def tensor(self, value: torch.Tensor) -> torch.Tensor:
        paused, self.syncs.paused = self.syncs.paused, True
        try:
            with self.mode:
                return self.mode.from_tensor(value).to("cuda")
        finally:
            self.syncs.paused = paused

    @contextlib.contextmanager
    def module(self, module: torch.nn.Module):
        state = dict(module.named_parameters(remove_duplicate=False))
        state.update(module.named_buffers(remove_duplicate=False))
        fake = {name: self.tensor(value) for name, value in state.items()}
        with _reparametrize_module(module, fake), self.mode, self.syncs:
            yield module


def on_fake_gpu(module: torch.nn.Module):
    """``(fake_gpu, context)``: the context runs ``module`` on the fake GPU (see the module docstring)."""
    gpu = FakeGPU()
    return gpu, gpu.module(module)
