"""Simplified CP-Mobile, the network of the DCASE 2025 Task 1 baseline.

Built to match the organisers' model exactly: the same layers in the same order, so that
parameter and MAC counts agree and their checkpoints load with ``strict=True``
(state-dict names such as ``stages.s1.b1.block.0.0.weight``).
"""
import re
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from models.registry import flag, make_config, register_network, shape_of, simplest_fitting


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor`` the MobileNet way (never down by more than 10 %)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvNormActivation(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional ReLU, indexed 0, 1, 2 like torchvision's unit."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1, activation=True):
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                      padding=(kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class Block(nn.Module):
    """Inverted bottleneck: 1x1 expand, 3x3 depthwise (carries the stride), 1x1 project."""

    def __init__(self, in_channels, out_channels, expansion_rate, stride):
        super().__init__()
        expanded = make_divisible(in_channels * expansion_rate, 8)
        self.block = nn.Sequential(
            ConvNormActivation(in_channels, expanded, kernel_size=1),
            ConvNormActivation(expanded, expanded, kernel_size=3, stride=stride, groups=expanded),
            ConvNormActivation(expanded, out_channels, kernel_size=1, activation=False),
        )
        self.use_shortcut = in_channels == out_channels
        if self.use_shortcut and tuple(stride) != (1, 1):
            # a strided residual needs the input downsampled to the block's output size
            self.shortcut = nn.AvgPool2d(kernel_size=3, stride=stride, padding=1)
        else:
            self.shortcut = nn.Identity()
        self.after_block_activation = nn.ReLU()

    def forward(self, x):
        out = self.block(x)
        if self.use_shortcut:
            out = out + self.shortcut(x)
        return self.after_block_activation(out)


@dataclass
class NetworkConfig:
    """The network's hyper-parameters; the defaults are the baseline's (the organisers' flags)."""

    n_classes: int = flag(10, "number of classes")
    in_channels: int = flag(1, "input channels")
    base_channels: int = flag(32, "channels of the first stage")
    channels_multiplier: float = flag(1.8, "channel growth from stage to stage")
    expansion_rate: float = flag(2.1, "expansion of the inverted bottleneck blocks")
    n_blocks: tuple = (3, 2, 1)
    strides: dict = field(default_factory=lambda: {"b2": (1, 1), "b3": (1, 2), "b4": (2, 1)})

    @classmethod
    def from_args(cls, args) -> "NetworkConfig":
        """Take the network flags from an argparse namespace (the flag names are the field names)."""
        return make_config("cp_mobile", vars(args))

    def to_dict(self) -> dict:
        return asdict(self)


def initialize_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@register_network("cp_mobile", NetworkConfig)
class Network(nn.Module):
    """Log-mel spectrogram ``[B, 1, n_mels, frames]`` -> class logits ``[B, n_classes]``."""

    def __init__(self, config: NetworkConfig = None):
        super().__init__()
        config = config or NetworkConfig()
        self.config = config
        base_channels = make_divisible(config.base_channels, 8)
        n_stages = len(config.n_blocks)
        stage_channels = [base_channels] + [
            make_divisible(base_channels * config.channels_multiplier ** stage, 8) for stage in range(n_stages)
        ]

        self.in_c = nn.Sequential(
            ConvNormActivation(config.in_channels, stage_channels[0] // 4, kernel_size=3, stride=2),
            ConvNormActivation(stage_channels[0] // 4, stage_channels[0], kernel_size=3, stride=2),
        )

        # blocks are numbered b1, b2, ... across all stages
        self.stages = nn.Sequential()
        block_number = 0
        for stage in range(n_stages):
            stage_blocks = nn.Sequential()
            in_channels = stage_channels[stage]
            for _ in range(config.n_blocks[stage]):
                block_number += 1
                name = f"b{block_number}"
                stride = config.strides.get(name, (1, 1))
                stage_blocks.add_module(name, Block(in_channels, stage_channels[stage + 1],
                                                    config.expansion_rate, stride))
                in_channels = stage_channels[stage + 1]
            self.stages.add_module(f"s{stage + 1}", stage_blocks)

        self.feed_forward = nn.Sequential(
            nn.Conv2d(stage_channels[-1], config.n_classes, kernel_size=1, bias=False),
            nn.BatchNorm2d(config.n_classes),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.apply(initialize_weights)

    @classmethod
    def settings_from_state(cls, state: dict) -> dict:
        """``n_classes, in_channels, base_channels, channels_multiplier, expansion_rate, n_blocks`` as the
        shapes of a state dict of this network fix them (multiplier and expansion rate up to the rounding of
        ``make_divisible``: the defaults where they fit, else the simplest value that does; strides are not in
        the weights). ValueError where the entries are not CP-Mobile's."""
        blocks = {}
        for key in state:
            match = re.fullmatch(r"stages\.s(\d+)\.b(\d+)\.block\.0\.0\.weight", key)
            if match:
                blocks.setdefault(int(match[1]), []).append(int(match[2]))
        if not blocks or sorted(blocks) != list(range(1, len(blocks) + 1)):
            raise ValueError("its blocks are not CP-Mobile's stages.s<i>.b<j>")
        base = shape_of(state, "in_c.1.0.weight")[0]
        stage_channels, expansions, in_channels = [base], [], base
        for stage in sorted(blocks):
            for block in sorted(blocks[stage]):
                expansions.append((in_channels, shape_of(state, f"stages.s{stage}.b{block}.block.0.0.weight")[0]))
                in_channels = shape_of(state, f"stages.s{stage}.b{block}.block.2.0.weight")[0]
            stage_channels.append(in_channels)
        defaults = NetworkConfig()
        multiplier = simplest_fitting(
            lambda m: all(make_divisible(base * m ** s, 8) == c for s, c in enumerate(stage_channels[1:])),
            defaults.channels_multiplier, 0.5, 6.0)
        expansion = simplest_fitting(lambda r: all(make_divisible(i * r, 8) == e for i, e in expansions),
                                     defaults.expansion_rate, 0.5, 8.0)
        return {"n_classes": shape_of(state, "feed_forward.0.weight")[0],
                "in_channels": shape_of(state, "in_c.0.0.weight")[1], "base_channels": base,
                "channels_multiplier": multiplier, "expansion_rate": expansion,
                "n_blocks": tuple(len(blocks[s]) for s in sorted(blocks))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.in_c(x))
        return self.feed_forward(x).flatten(1)
