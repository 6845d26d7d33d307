"""The simplified CP-Mobile network must equal the organisers' baseline exactly: complexity,
per-layer table, state-dict names and shapes, rounding of channel widths and initialisation."""
import pytest
import torch
import torchinfo
from torch import nn

from helpers.outputs.complexity import layer_table, model_complexity, parameter_bytes
from models.cp_mobile import Network, NetworkConfig, make_divisible

INPUT_SHAPE = (1, 1, 256, 65)

# The organisers' per-layer complexity table (official_baseline_README.md, "Baseline Complexity"),
# transcribed row by row: (their description, input shape, params, MACs); "-" is written as 0.
# The second element is the name of the same unit in this implementation's state dict.
REFERENCE_TABLE = [
    ("in_c[0]", "in_c.0", [1, 1, 256, 65], 88, 304_144),
    ("in_c[1]", "in_c.1", [1, 8, 128, 33], 2_368, 2_506_816),
    ("stages[0].b1.block[0]", "stages.s1.b1.block.0", [1, 32, 64, 17], 2_176, 2_228_352),
    ("stages[0].b1.block[1]", "stages.s1.b1.block.1", [1, 64, 64, 17], 704, 626_816),
    ("stages[0].b1.block[2]", "stages.s1.b1.block.2", [1, 64, 64, 17], 2_112, 2_228_288),
    ("stages[0].b2.block[0]", "stages.s1.b2.block.0", [1, 32, 64, 17], 2_176, 2_228_352),
    ("stages[0].b2.block[1]", "stages.s1.b2.block.1", [1, 64, 64, 17], 704, 626_816),
    ("stages[0].b2.block[2]", "stages.s1.b2.block.2", [1, 64, 64, 17], 2_112, 2_228_288),
    ("stages[0].b3.block[0]", "stages.s1.b3.block.0", [1, 32, 64, 17], 2_176, 2_228_352),
    ("stages[0].b3.block[1]", "stages.s1.b3.block.1", [1, 64, 64, 17], 704, 331_904),
    ("stages[0].b3.block[2]", "stages.s1.b3.block.2", [1, 64, 64, 9], 2_112, 1_179_712),
    ("stages[1].b4.block[0]", "stages.s2.b4.block.0", [1, 32, 64, 9], 2_176, 1_179_776),
    ("stages[1].b4.block[1]", "stages.s2.b4.block.1", [1, 64, 64, 9], 704, 166_016),
    ("stages[1].b4.block[2]", "stages.s2.b4.block.2", [1, 64, 32, 9], 3_696, 1_032_304),
    ("stages[1].b5.block[0]", "stages.s2.b5.block.0", [1, 56, 32, 9], 6_960, 1_935_600),
    ("stages[1].b5.block[1]", "stages.s2.b5.block.1", [1, 120, 32, 9], 1_320, 311_280),
    ("stages[1].b5.block[2]", "stages.s2.b5.block.2", [1, 120, 32, 9], 6_832, 1_935_472),
    ("stages[2].b6.block[0]", "stages.s3.b6.block.0", [1, 56, 32, 9], 6_960, 1_935_600),
    ("stages[2].b6.block[1]", "stages.s3.b6.block.1", [1, 120, 32, 9], 1_320, 311_280),
    ("stages[2].b6.block[2]", "stages.s3.b6.block.2", [1, 120, 32, 9], 12_688, 3_594_448),
    ("ff_list[0]", "feed_forward.0", [1, 104, 32, 9], 1_040, 299_520),
    ("ff_list[1]", "feed_forward.1", [1, 10, 32, 9], 20, 20),
    ("ff_list[2]", "feed_forward.2", [1, 10, 32, 9], 0, 0),
]
REFERENCE_PARAMS = 61_148
REFERENCE_MACS = 29_419_156


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Network()


def test_reference_table_sums_to_published_totals():
    # guards the transcription itself: the rows must add up to the README's "Sum" row
    assert sum(row[3] for row in REFERENCE_TABLE) == REFERENCE_PARAMS
    assert sum(row[4] for row in REFERENCE_TABLE) == REFERENCE_MACS


def test_torchinfo_totals(model):
    summary = torchinfo.summary(model, input_size=INPUT_SHAPE, verbose=0)
    assert summary.total_params == REFERENCE_PARAMS
    assert summary.total_mult_adds == REFERENCE_MACS


def test_model_complexity_totals_and_16bit_bytes(model):
    complexity = model_complexity(model, INPUT_SHAPE)
    assert complexity == {"macs": REFERENCE_MACS, "params": REFERENCE_PARAMS, "param_bytes": 122_296,
                          "bytes_by_dtype": {"float16": 122_296}}
    assert REFERENCE_PARAMS * 2 == 122_296
    # the model passed in is not converted in place
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert parameter_bytes(model) == REFERENCE_PARAMS * 4
    assert parameter_bytes(Network().half()) == 122_296


def test_layer_table_matches_every_reference_row(model):
    rows = layer_table(model, INPUT_SHAPE)
    assert len(rows) == len(REFERENCE_TABLE)
    for row, (description, name, shape, params, macs) in zip(rows, REFERENCE_TABLE):
        got_name, _, got_shape, got_params, got_macs = row
        assert got_name == name, description
        assert list(got_shape) == shape, description
        assert got_params == params, description
        assert got_macs == macs, description
    assert sum(r[3] for r in rows) == REFERENCE_PARAMS
    assert sum(r[4] for r in rows) == REFERENCE_MACS


def _unit_keys(prefix):
    keys = {f"{prefix}.0.weight"}  # conv, no bias
    keys |= {f"{prefix}.1.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    return keys


def expected_state_dict_keys():
    """Built from SPEC section 4: stem of two units, blocks b1..b6 in stages s1 (3), s2 (2), s3 (1),
    each block three units block.0/1/2; head conv (no bias) + batch norm; pooling has no state."""
    keys = _unit_keys("in_c.0") | _unit_keys("in_c.1")
    block = 0
    for stage, n_blocks in enumerate((3, 2, 1), start=1):
        for _ in range(n_blocks):
            block += 1
            for unit in range(3):
                keys |= _unit_keys(f"stages.s{stage}.b{block}.block.{unit}")
    keys |= {"feed_forward.0.weight"}
    keys |= {f"feed_forward.1.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    return keys


def test_state_dict_names(model):
    expected = expected_state_dict_keys()
    assert len(expected) == 126
    state = model.state_dict()
    assert set(state) == expected
    for key in ("in_c.0.0.weight", "in_c.0.1.running_mean", "stages.s1.b1.block.0.0.weight",
                "stages.s3.b6.block.2.1.num_batches_tracked", "feed_forward.0.weight", "feed_forward.1.bias"):
        assert key in state


@pytest.mark.parametrize("key, shape", [
    ("in_c.0.0.weight", (8, 1, 3, 3)),
    ("in_c.1.0.weight", (32, 8, 3, 3)),
    ("stages.s1.b1.block.0.0.weight", (64, 32, 1, 1)),
    ("stages.s1.b1.block.1.0.weight", (64, 1, 3, 3)),  # depthwise
    ("stages.s2.b4.block.2.0.weight", (56, 64, 1, 1)),
    ("stages.s2.b5.block.0.0.weight", (120, 56, 1, 1)),
    ("stages.s3.b6.block.2.0.weight", (104, 120, 1, 1)),
    ("stages.s3.b6.block.2.1.running_var", (104,)),
    ("feed_forward.0.weight", (10, 104, 1, 1)),
    ("feed_forward.1.bias", (10,)),
])
def test_state_dict_shapes(model, key, shape):
    assert tuple(model.state_dict()[key].shape) == shape


def test_block_strides_and_shortcuts(model):
    blocks = {name: module for name, module in model.named_modules()
              if name.startswith("stages.") and name.count(".") == 2}
    strides = {name.split(".")[-1]: tuple(b.block[1][0].stride) for name, b in blocks.items()}
    assert strides == {"b1": (1, 1), "b2": (1, 1), "b3": (1, 2), "b4": (2, 1), "b5": (1, 1), "b6": (1, 1)}
    # shortcut where in == out: b1, b2, b3 (strided -> pooled), b5; not b4 (32->56), b6 (56->104)
    units = [(1, "b1"), (1, "b2"), (1, "b3"), (2, "b4"), (2, "b5"), (3, "b6")]
    assert [blocks[f"stages.s{s}.{b}"].use_shortcut for s, b in units] == [True, True, True, False, True, False]
    pool = blocks["stages.s1.b3"].shortcut
    assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 3 and pool.padding == 1
    assert tuple(pool.stride) == (1, 2)
    # the residual of b3: relu(block(x) + avgpool(x))
    b3 = blocks["stages.s1.b3"].eval()
    x = torch.randn(2, 32, 16, 9)
    with torch.no_grad():
        expected = torch.relu(b3.block(x) + nn.functional.avg_pool2d(x, 3, (1, 2), 1))
        assert torch.allclose(b3(x), expected)
    b4 = blocks["stages.s2.b4"].eval()
    with torch.no_grad():
        assert torch.allclose(b4(x), torch.relu(b4.block(x)))


def test_save_and_load_strict_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    source = Network()
    # change the batch-norm statistics so that a load that silently skipped buffers would show
    source.train()
    with torch.no_grad():
        source(torch.randn(4, *INPUT_SHAPE[1:]))
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)

    torch.manual_seed(2)
    target = Network()
    x = torch.randn(3, *INPUT_SHAPE[1:])
    source.eval()
    target.eval()
    with torch.no_grad():
        assert not torch.allclose(source(x), target(x))
    result = target.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


@pytest.mark.parametrize("value, expected", [
    (32, 32),
    (32 * 1.8, 56),        # 57.6
    (32 * 1.8 ** 2, 104),  # 103.68
    (32 * 2.1, 64),        # 67.2
    (56 * 2.1, 120),       # 117.6
    (104 * 2.1, 216),      # 218.4
    (3, 8),                # never below the divisor
    (11, 16),              # int(15)//8*8 = 8 loses > 10 % of 11 -> +8
    (11.9, 16),            # 8 < 0.9 * 11.9 -> +8
    (12, 16),              # rounds up normally
    (17, 16),              # 16 >= 0.9 * 17: no correction
    (19, 24),              # 16 < 0.9 * 19 -> +8
])
def test_make_divisible(value, expected):
    assert make_divisible(value, 8) == expected


def test_make_divisible_plus_divisor_rule_fires():
    # without the correction the result would be 8, which is more than 10 % below 11
    assert max(8, int(11 + 4) // 8 * 8) == 8
    assert make_divisible(11, 8) == 16


def test_stage_widths_follow_config():
    config = NetworkConfig()
    assert (config.base_channels, config.channels_multiplier, config.expansion_rate) == (32, 1.8, 2.1)
    assert config.n_blocks == (3, 2, 1)
    assert [make_divisible(32 * 1.8 ** i, 8) for i in range(3)] == [32, 56, 104]


def test_initialisation():
    torch.manual_seed(3)
    net = Network()
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(norms) == 21 and len(convs) == 21
    for norm in norms:
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    for conv in convs:
        assert conv.bias is None
    # kaiming normal, fan_out, gain sqrt(2): std = sqrt(2 / fan_out); check on the largest conv
    conv = net.stages.s3.b6.block[2][0]
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    std = conv.weight.std().item()
    assert abs(std - (2 / fan_out) ** 0.5) < 0.1 * (2 / fan_out) ** 0.5


@pytest.mark.parametrize("batch", [1, 3])
def test_output_shape(batch):
    net = Network().eval()
    with torch.no_grad():
        out = net(torch.randn(batch, *INPUT_SHAPE[1:]))
    assert out.shape == (batch, 10)
    assert torch.isfinite(out).all()


def test_output_shape_n_classes_config():
    net = Network(NetworkConfig(n_classes=7)).eval()
    with torch.no_grad():
        assert net(torch.randn(2, *INPUT_SHAPE[1:])).shape == (2, 7)
