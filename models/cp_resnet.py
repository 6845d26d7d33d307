"""CP-ResNet, the receptive-field-regularised ResNet of Koutini et al. (IEEE/ACM TASLP 2021), the CNN
teacher of the 2023 winner's ensemble.

A 5x5 stride-2 stem, three stages of basic residual blocks (two convolutions each) whose widths
grow by ``channels_multiplier``, max-pooling inside the first stage, and a 1x1 convolution to the
classes followed by global average pooling. What sets the network apart is how its receptive field
is controlled: every convolution of a block is either 3x3 or 1x1, and ``rho`` says how many are
3x3. The first block's two convolutions are 3x3 and 1x1; of all later convolutions, in the order
the input meets them, the first ``rho`` are 3x3 and the rest 1x1. With four blocks per stage this
is the rule of the authors' code (their ``rho``, the same values). Koutini et al. found that a
receptive field kept small this way generalises better on acoustic scenes. As in the authors'
2023 code, the first stage max-pools after its blocks 1 and 2 (theirs: 1, 2 and 4 of four).

The 2023 winner's CP-ResNet teachers: about 128k parameters with ``base_channels`` 32,
``channels_multiplier`` 2, ``n_blocks`` (2, 1, 1). Here ``rho`` 4 (stages 1 and 2 in 3x3, stage 3
in 1x1) gives 122,356 parameters, the closest (``rho`` 3: 89,588; 5: 187,892), and is the default.
Far over the complexity limits in MACs (86 million): a teacher, not a submission.
"""
import re
from dataclasses import dataclass

import torch
from torch import nn

from models.registry import flag, register_network, shape_of, simplest_fitting


@dataclass
class CPResNetConfig:
    n_classes: int = flag(10, "number of classes")
    in_channels: int = flag(1, "input channels")
    base_channels: int = flag(32, "channels of the first stage")
    channels_multiplier: float = flag(2.0, "channel growth from stage to stage")
    n_blocks: tuple = flag((2, 1, 1), "residual blocks per stage")
    rho: int = flag(4, "receptive field: how many convolutions after the first block are 3x3 (the rest 1x1)")
    pool_after: tuple = (1, 2)  # 2x2 max-pooling after these blocks of the first stage


class BasicBlock(nn.Module):
    """Two convolutions with batch norm; ReLU between them and after the sum with the shortcut
    (a 1x1 convolution where the width changes)."""

    def __init__(self, in_channels, out_channels, kernel1, kernel2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel1, padding=kernel1 // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel2, padding=kernel2 // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


def kernel_sizes(n_blocks, rho) -> list:
    """``[(k1, k2), ...]`` per block, in network order: the first block 3 and 1, then ``rho`` 3s, then 1s."""
    sizes = [3, 1]
    for position in range(2 * sum(n_blocks) - 2):
        sizes.append(3 if position < rho else 1)
    return [tuple(sizes[i:i + 2]) for i in range(0, len(sizes), 2)]


@register_network("cp_resnet", CPResNetConfig)
class CPResNet(nn.Module):
    """Log-mel spectrogram ``[B, 1, n_mels, frames]`` -> class logits ``[B, n_classes]``."""

    def __init__(self, config: CPResNetConfig = None):
        super().__init__()
        config = config or CPResNetConfig()
        self.config = config
        if len(config.n_blocks) != 3 or min(config.n_blocks) < 1:
            raise ValueError(f"n_blocks {config.n_blocks}: CP-ResNet has three stages of at least one block each")
        if config.rho < 0:
            raise ValueError(f"rho {config.rho} must be 0 or more")
        widths = [round(config.base_channels * config.channels_multiplier ** stage) for stage in range(3)]

        self.in_c = nn.Sequential(
            nn.Conv2d(config.in_channels, widths[0], 5, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        kernels = iter(kernel_sizes(config.n_blocks, config.rho))
        in_channels = widths[0]
        self.stages = nn.Sequential()
        for stage, (width, n_blocks) in enumerate(zip(widths, config.n_blocks)):
            blocks = nn.Sequential()
            for block in range(1, n_blocks + 1):
                blocks.add_module(f"block{block}", BasicBlock(in_channels, width, *next(kernels)))
                if stage == 0 and block in config.pool_after:
                    blocks.add_module(f"pool{block}", nn.MaxPool2d(2))
                in_channels = width
            self.stages.add_module(f"stage{stage + 1}", blocks)

        self.feed_forward = nn.Sequential(
            nn.Conv2d(widths[-1], config.n_classes, 1, bias=False),
            nn.BatchNorm2d(config.n_classes),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.apply(initialize_weights)

    @classmethod
    def settings_from_state(cls, state: dict) -> dict:
        """``n_classes, in_channels, base_channels, channels_multiplier, n_blocks, rho`` as the shapes of a
        state dict of this network fix them (the default ``rho`` where several give the same kernels).
        ValueError where the entries are not CP-ResNet's."""
        blocks = {}
        for key in state:
            match = re.fullmatch(r"stages\.stage(\d)\.block(\d+)\.conv1\.weight", key)
            if match:
                blocks.setdefault(int(match[1]), []).append(int(match[2]))
        if sorted(blocks) != [1, 2, 3]:
            raise ValueError("its stages are not CP-ResNet's stages.stage1 to stage3")
        n_blocks = tuple(len(blocks[s]) for s in (1, 2, 3))
        names = [f"stages.stage{s}.block{b}" for s in (1, 2, 3) for b in sorted(blocks[s])]
        kernels = [(shape_of(state, f"{n}.conv1.weight")[-1], shape_of(state, f"{n}.conv2.weight")[-1]) for n in names]
        widths = [shape_of(state, f"stages.stage{s}.block1.conv1.weight")[0] for s in (1, 2, 3)]
        defaults = CPResNetConfig()
        rho = simplest_fitting(lambda r: kernel_sizes(n_blocks, int(r)) == kernels, defaults.rho, 0, 2 * sum(n_blocks))
        multiplier = simplest_fitting(lambda m: all(round(widths[0] * m ** s) == w for s, w in enumerate(widths)),
                                      defaults.channels_multiplier, 0.5, 6.0)
        return {"n_classes": shape_of(state, "feed_forward.0.weight")[0],
                "in_channels": shape_of(state, "in_c.0.weight")[1], "base_channels": widths[0],
                "channels_multiplier": multiplier, "n_blocks": n_blocks, "rho": int(rho)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.stages(self.in_c(x))).flatten(1)

    def receptive_field(self) -> int:
        """Input bins (frequency or time) that one position before the classifier sees."""
        size, jump = 1, 1
        for module in [*self.in_c.modules(), *self.stages.modules()]:  # in the order the input meets them
            if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):  # shortcuts are 1x1, stride 1: no change
                kernel, stride = _first(module.kernel_size), _first(module.stride)
                size += (kernel - 1) * jump
                jump *= stride
        return size


def _first(size):
    return size[0] if isinstance(size, tuple) else size


def initialize_weights(module: nn.Module) -> None:
    """He initialisation; each residual branch starts at zero (its last batch-norm scale is 0), so
    that every block starts as its shortcut, the aim of the Fixup-style start of the authors' code."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, BasicBlock):
        nn.init.zeros_(module.bn2.weight)
