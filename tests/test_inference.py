"""How networks with 16-bit parameters are computed at inference (models/inference.py) and what each way gives."""
import copy

import pytest
import torch
from torch import nn

from models import inference
from models.cp_mobile import Network
from models.cp_resnet import CPResNet
from models.inference import store_for_submission
from models.multi_device import MultiDeviceModel
from models.quantization import compute_dtype, prepare_qat, quantize_to_int8

INPUT_SHAPE = (1, 1, 256, 65)


def stored_network(cls=Network, seed=0):
    """A network as it is tested and submitted: eval mode, 16-bit parameters, trained-looking batch norm."""
    torch.manual_seed(seed)
    network = cls().eval()
    for module in network.modules():  # statistics away from the initial 0 and 1, so folding them matters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return store_for_submission(network)


def plain_32_bit(network, features):
    """The reference: the network itself in 32 bits on the stored values, all clips at once."""
    with torch.no_grad():
        return copy.deepcopy(network).float()(features.float())


def test_the_cpu_forms_fold_batch_norm_in_32_bits_only_and_use_channels_last():
    network = stored_network()
    full = inference.cpu_form(network, half=False)
    half = inference.cpu_form(network, half=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in full.modules())  # folded into the convolutions
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    # half precision computes on the stored values themselves: the same state, unfolded
    assert half.state_dict().keys() == network.state_dict().keys()
    assert all(torch.equal(half.state_dict()[k], v) for k, v in network.state_dict().items())
    weight = next(p for p in full.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    # the network itself is not changed
    assert any(isinstance(m, nn.BatchNorm2d) for m in network.modules())
    assert {p.dtype for p in network.parameters()} == {torch.float16}


@pytest.mark.parametrize("cls", [Network, CPResNet])
@pytest.mark.parametrize("half", [False, True])
def test_both_forms_compute_the_network_on_its_stored_values(cls, half):
    network = stored_network(cls)
    torch.manual_seed(1)
    features = torch.randn(2 * inference.CPU_BATCH + 5, *INPUT_SHAPE[1:]).half()  # three chunks
    logits = inference.run_form(inference.cpu_form(network, half), features)
    reference = plain_32_bit(network, features)
    assert logits.dtype == torch.float32 and logits.shape == reference.shape
    if half:  # 16-bit rounding of every activation
        assert (logits - reference).abs().max() < 0.02 * reference.abs().max()
    else:  # the same 32-bit function: folding and the chunks change only the order of the roundings
        assert torch.allclose(logits, reference, rtol=1e-4, atol=1e-4 * reference.abs().max())
    differ = logits.argmax(1) != reference.argmax(1)
    top2 = reference.topk(2, dim=1).values
    assert ((top2[:, 0] - top2[:, 1])[differ] < 0.02 * reference.abs().max()).all()  # only at near ties


def test_the_copy_is_made_once_and_remade_when_the_stored_values_change():
    network = stored_network()
    features = torch.randn(4, *INPUT_SHAPE[1:]).half()
    form = inference.inference_form(network)
    assert inference.inference_form(network) is form
    first = inference.infer(network, features)
    # new weights loaded into the same network (as --resume or a new phase would): a new copy computes them
    other = stored_network(seed=5)
    network.load_state_dict(other.state_dict())
    assert inference.inference_form(network) is not form
    assert torch.allclose(inference.infer(network, features), plain_32_bit(other, features), atol=1e-4)
    assert not torch.allclose(inference.infer(network, features), first, atol=1e-3)


def test_int8_networks_compute_in_32_bits():
    torch.manual_seed(0)
    network = store_for_submission(quantize_to_int8(prepare_qat(Network()).eval()))
    features = torch.randn(3, *INPUT_SHAPE[1:]).half()
    assert compute_dtype(inference.inference_form(network)) == torch.float32
    assert torch.allclose(inference.infer(network, features), plain_32_bit(network, features), atol=1e-4)


def test_the_container_computes_each_device_through_infer():
    torch.manual_seed(0)
    system = MultiDeviceModel(Network(), ["a", "b"]).eval()
    for parameter in system.device_models["b"].parameters():
        parameter.data.add_(0.1 * torch.randn_like(parameter))
    store_for_submission(system)
    devices = ["b", "a", "s4", "b", "unknown"]
    features = torch.randn(len(devices), *INPUT_SHAPE[1:]).half()
    logits = system(features, devices, compute=inference.infer)
    for i, device in enumerate(devices):
        expected = plain_32_bit(system.get_model_for_device(device), features[i:i + 1])
        assert torch.allclose(logits[i:i + 1], expected, atol=1e-4)
    assert not torch.allclose(logits[0], logits[1], atol=1e-3)  # b has a model of its own


def test_relu_overwrites_only_a_tensor_nothing_else_reads():
    class Reuses(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.other, self.relu = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3), nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            z = self.relu(self.other(x))  # the only reader of its convolution: in place
            return (self.relu(y) + y + z).mean((2, 3))  # y is read after the ReLU: not in place

    network = Reuses().eval().half()
    form = inference.cpu_form(network, half=False)
    in_place = [n for n in form.graph.nodes if n.target is torch.relu_]
    assert len(in_place) == 1 and in_place[0].args[0].target == "other"
    features = torch.randn(2, 1, 8, 8).half()
    assert torch.allclose(inference.infer(network, features), plain_32_bit(network, features), atol=1e-6)
    # CP-Mobile and CP-ResNet: every ReLU follows a batch norm (folded: a convolution) or a sum
    for cls in (Network, CPResNet):
        form = inference.cpu_form(stored_network(cls), half=True)
        modules = dict(form.named_modules())
        assert not any(n.op == "call_module" and isinstance(modules[n.target], nn.ReLU) for n in form.graph.nodes)
        assert any(n.target is torch.relu_ for n in form.graph.nodes)


def test_a_network_that_fx_cannot_trace_is_computed_unfolded():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            x = self.norm(self.conv(x))
            return x.mean((2, 3)) if x.sum() > 0 else -x.mean((2, 3))  # control flow on the data

    network = DataDependent().eval().half()
    form = inference.cpu_form(network, half=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in form.modules())
    features = torch.randn(2, 1, 8, 8).half()
    assert torch.allclose(inference.infer(network, features), plain_32_bit(network, features), atol=1e-5)


def test_a_cpu_always_computes_the_folded_32_bit_copy():
    """No timing decides the arithmetic: the same figures in every process on one machine (a choice by
    timing flipped between runs on a CPU where both arithmetics are about as fast)."""
    network = stored_network()
    features = torch.randn(5, *INPUT_SHAPE[1:]).half()
    form = inference.inference_form(network)
    assert compute_dtype(form) == torch.float32
    assert not any(isinstance(m, nn.BatchNorm2d) for m in form.modules())
    assert torch.equal(inference.infer(network, features),
                       inference.run_form(inference.cpu_form(network, half=False), features))
