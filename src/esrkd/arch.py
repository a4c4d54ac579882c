"""ESRGAN's networks with BasicSR's names, so that its public weights load as they are.

RRDBNet keys: conv_first, body.{i}.rdb{1,2,3}.conv{1..5}, conv_body, conv_up1, conv_up2, conv_hr,
conv_last. The discriminator is BasicSR's VGGStyleDiscriminator (conv0_0 ... linear2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RRDBArgs:
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    scale: int = 4
    num_in_ch: int = 3
    num_out_ch: int = 3

    def asdict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DiscArgs:
    num_feat: int = 64
    input_size: int = 128  # HR patch side; the classifier head is sized for it
    num_in_ch: int = 3

    def asdict(self) -> dict:
        return asdict(self)


def _scaled_kaiming(convs: list[nn.Conv2d], scale: float) -> None:
    # ESRGAN initialises the dense-block convs small (x0.1) so that deep residual stacks start stable.
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight)
        conv.weight.data.mul_(scale)
        nn.init.zeros_(conv.bias)


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        g = num_grow_ch
        self.conv1 = nn.Conv2d(num_feat, g, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + g, g, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * g, g, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * g, g, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * g, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        _scaled_kaiming([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x  # residual scaling 0.2, as in ESRGAN


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator. x4 upsamples twice by nearest + conv; x2 first pixel-unshuffles the input."""

    def __init__(self, args: RRDBArgs):
        super().__init__()
        self.args = args
        unshuffle = {4: 1, 2: 2}[args.scale]
        self.unshuffle = unshuffle
        nf = args.num_feat
        self.conv_first = nn.Conv2d(args.num_in_ch * unshuffle**2, nf, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(nf, args.num_grow_ch) for _ in range(args.num_block)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, args.num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward_features(self, x: torch.Tensor, layers: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """SR output and the outputs of the RRDB blocks listed in `layers` (B, num_feat, h, w)."""
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        body, hidden = feat, []
        for i, block in enumerate(self.body):
            body = block(body)
            if i in layers:
                hidden.append(body)
        feat = feat + self.conv_body(body)
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat))), hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, [])[0]


def conv_names(args: RRDBArgs) -> list[str]:
    """RRDBNet's conv layers by name, in BasicSR's order (conv_first, body.0.rdb1.conv1, ..., conv_last), without
    building the network: params validation calls it (tests/test_arch.py pins it to the built network)."""
    body = [f"body.{i}.rdb{r}.conv{c}" for i in range(args.num_block) for r in (1, 2, 3) for c in range(1, 6)]
    return ["conv_first", *body, "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's discriminator: five stride-2 stages, then two linear layers.

    BasicSR fixes input_size to 128 or 256; any multiple of 32 works the same way here (the demo
    trains on small patches), with BasicSR's keys and, at 128, its exact shapes.
    """

    def __init__(self, args: DiscArgs):
        super().__init__()
        if args.input_size % 32:
            raise ValueError(f"discriminator input_size {args.input_size} must be a multiple of 32")
        self.args = args
        nf = args.num_feat
        self.conv0_0 = nn.Conv2d(args.num_in_ch, nf, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(nf, nf, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(nf, affine=True)
        self.conv1_0 = nn.Conv2d(nf, nf * 2, 3, 1, 1, bias=False)
        self.bn1_0 = nn.BatchNorm2d(nf * 2, affine=True)
        self.conv1_1 = nn.Conv2d(nf * 2, nf * 2, 4, 2, 1, bias=False)
        self.bn1_1 = nn.BatchNorm2d(nf * 2, affine=True)
        self.conv2_0 = nn.Conv2d(nf * 2, nf * 4, 3, 1, 1, bias=False)
        self.bn2_0 = nn.BatchNorm2d(nf * 4, affine=True)
        self.conv2_1 = nn.Conv2d(nf * 4, nf * 4, 4, 2, 1, bias=False)
        self.bn2_1 = nn.BatchNorm2d(nf * 4, affine=True)
        self.conv3_0 = nn.Conv2d(nf * 4, nf * 8, 3, 1, 1, bias=False)
        self.bn3_0 = nn.BatchNorm2d(nf * 8, affine=True)
        self.conv3_1 = nn.Conv2d(nf * 8, nf * 8, 4, 2, 1, bias=False)
        self.bn3_1 = nn.BatchNorm2d(nf * 8, affine=True)
        self.conv4_0 = nn.Conv2d(nf * 8, nf * 8, 3, 1, 1, bias=False)
        self.bn4_0 = nn.BatchNorm2d(nf * 8, affine=True)
        self.conv4_1 = nn.Conv2d(nf * 8, nf * 8, 4, 2, 1, bias=False)
        self.bn4_1 = nn.BatchNorm2d(nf * 8, affine=True)
        side = args.input_size // 32
        self.linear1 = nn.Linear(nf * 8 * side * side, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.args.input_size or x.shape[-2] != self.args.input_size:
            raise ValueError(f"discriminator expects {self.args.input_size}x{self.args.input_size} inputs, got {tuple(x.shape[-2:])}")
        feat = self.lrelu(self.conv0_0(x))
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))
        for stage in range(1, 5):
            for j in range(2):
                conv, bn = getattr(self, f"conv{stage}_{j}"), getattr(self, f"bn{stage}_{j}")
                feat = self.lrelu(bn(conv(feat)))
        feat = self.lrelu(self.linear1(feat.flatten(1)))
        return self.linear2(feat)


def count_params(module_or_state: nn.Module | dict) -> tuple[int, int]:
    """(total, non-zero) parameter counts of a module or a state dict of its parameters."""
    tensors = module_or_state.parameters() if isinstance(module_or_state, nn.Module) else module_or_state.values()
    tensors = list(tensors)
    return sum(t.numel() for t in tensors), sum(int(torch.count_nonzero(t)) for t in tensors)
