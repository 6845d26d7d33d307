"""Which arithmetic 16-bit parameters compute in (models/arithmetic.py) and what each gives."""
import copy

import pytest
import torch

from models import arithmetic
from models.asc_module import round_parameters_to_fp16
from models.cp_mobile import Network
from models.multi_device import MultiDeviceModel

INPUT_SHAPE = (1, 1, 256, 65)


@pytest.fixture(autouse=True)
def fresh_decisions(monkeypatch):
    monkeypatch.setattr(arithmetic, "_decisions", {})


def timed(half_seconds, float_seconds, calls):
    def seconds(model, x, repeats=2):
        calls.append(x.dtype)
        return half_seconds if x.dtype == torch.float16 else float_seconds
    return seconds


@pytest.mark.parametrize("half_seconds, float_seconds, expected", [
    (1.0, 2.0, True),  # half precision twice as fast: chosen
    (1.0, 1.2, False),  # only 1.2x faster: below the margin, 32 bits stay
    (3.0, 1.0, False),  # half precision slower (as on the AMD EPYC of the README)
])
def test_half_precision_only_where_clearly_faster(monkeypatch, half_seconds, float_seconds, expected):
    calls = []
    monkeypatch.setattr(arithmetic, "_seconds", timed(half_seconds, float_seconds, calls))
    network = Network()
    assert arithmetic.half_is_faster(network, INPUT_SHAPE) is expected
    assert arithmetic.half_is_faster(network, INPUT_SHAPE) is expected
    assert calls == [torch.float16, torch.float32]  # measured once, then remembered


def test_the_container_computes_in_the_chosen_arithmetic_on_the_same_16_bit_values(monkeypatch):
    torch.manual_seed(0)
    system = MultiDeviceModel(Network(), ["a", "b"]).eval()
    rounded = {k: v.half() for k, v in system.state_dict().items() if v.is_floating_point()}
    for faster, dtype in ((True, torch.float16), (False, torch.float32)):
        monkeypatch.setattr(arithmetic, "_decisions", {})
        monkeypatch.setattr(arithmetic, "_seconds", timed(1.0, 3.0 if faster else 1.0, []))
        model = round_parameters_to_fp16(copy.deepcopy(system), INPUT_SHAPE)
        assert all(p.dtype == dtype for p in model.parameters())
        stored = model.state_dict()
        assert all(torch.equal(stored[k].half(), v) for k, v in rounded.items())  # the stored values, either way
    # without an input shape (the export, the complexity count) nothing is measured: 32 bits on a CPU
    monkeypatch.setattr(arithmetic, "_seconds", lambda *a, **k: pytest.fail("measured"))
    assert all(p.dtype == torch.float32 for p in round_parameters_to_fp16(copy.deepcopy(system)).parameters())


def test_both_arithmetics_give_the_same_classes_except_within_16_bit_rounding():
    torch.manual_seed(1)
    network = Network().half().eval()
    features = torch.randn(64, *INPUT_SHAPE[1:]).half()
    with torch.no_grad():
        half = network(features).float()
        full = copy.deepcopy(network).float()(features.float())
    differ = half.argmax(1) != full.argmax(1)
    assert (half - full).abs().max() < 0.05 * full.abs().max()  # the same function, 16-bit rounding apart
    top2 = full.topk(2, dim=1).values
    assert ((top2[:, 0] - top2[:, 1])[differ] < 0.05).all()  # a class changes only at a near tie


def test_the_real_measurement_decides_and_is_remembered():
    network = Network().half()
    decision = arithmetic.half_is_faster(network, INPUT_SHAPE, batch_size=2)
    assert isinstance(decision, bool) and len(arithmetic._decisions) == 1
    assert arithmetic.half_is_faster(network, INPUT_SHAPE, batch_size=2) is decision
