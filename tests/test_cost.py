import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from esrkd.arch import RRDBArgs, RRDBNet, count_params
from esrkd.cost import flops, generator_flops, latency


def conv3x3_flops(cin: int, cout: int, h: int, w: int) -> int:
    # One output pixel of one output channel is cin*3*3 multiply-adds, each 2 FLOPs; bias is not counted.
    return 2 * cout * cin * 3 * 3 * h * w


def tiny_net() -> RRDBNet:
    return RRDBNet(RRDBArgs(num_feat=8, num_block=1, num_grow_ch=4))


def test_conv_flops_match_the_hand_formula_without_bias():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # 2 * Cout * Cin * k*k * H * W = 2 * 8 * 3 * 9 * 16 * 16
    assert flops(conv, (1, 3, 16, 16)) == 2 * 8 * 3 * 9 * 16 * 16 == 110_592
    # The bias adds Cout*H*W additions that the counter ignores: with or without it the count is the same.
    assert flops(nn.Conv2d(3, 8, 3, padding=1, bias=False), (1, 3, 16, 16)) == 110_592


def test_rrdbnet_flops_are_the_sum_over_its_convs():
    nf, g = 8, 4
    rdb = (conv3x3_flops(nf, g, 8, 8)            # conv1:  8 -> 4
           + conv3x3_flops(nf + g, g, 8, 8)      # conv2: 12 -> 4
           + conv3x3_flops(nf + 2 * g, g, 8, 8)  # conv3: 16 -> 4
           + conv3x3_flops(nf + 3 * g, g, 8, 8)  # conv4: 20 -> 4
           + conv3x3_flops(nf + 4 * g, nf, 8, 8))  # conv5: 24 -> 8
    expected = (conv3x3_flops(3, nf, 8, 8)       # conv_first at LR
                + 3 * rdb                        # one RRDB = three RDBs
                + conv3x3_flops(nf, nf, 8, 8)    # conv_body at LR
                + conv3x3_flops(nf, nf, 16, 16)  # conv_up1 after the first x2 nearest upsample
                + conv3x3_flops(nf, nf, 32, 32)  # conv_up2 after the second
                + conv3x3_flops(nf, nf, 32, 32)  # conv_hr
                + conv3x3_flops(nf, 3, 32, 32))  # conv_last
    net = tiny_net()
    assert flops(net, (1, 3, 8, 8)) == expected == 4_635_648

    # Only the convolutions are counted: nearest interpolation, LeakyReLU, cat, residual adds and the
    # 0.2 scalings cost nothing to FlopCounterMode.
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 8, 8))
    assert {str(op) for op in counter.get_flop_counts()["Global"]} == {"aten.convolution"}


def test_zeroed_weights_do_not_change_flops():
    net = tiny_net()
    dense = flops(net, (1, 3, 8, 8))
    total, nonzero_before = count_params(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                w = m.weight.view(-1)
                w[: w.numel() // 2] = 0
    _, nonzero_after = count_params(net)
    assert nonzero_after < nonzero_before - total // 3  # about half of the (mostly conv) weights are gone
    assert flops(net, (1, 3, 8, 8)) == dense  # dense kernels multiply the zeros all the same


def test_latency_reports_its_runs():
    res = latency(tiny_net(), (1, 3, 8, 8), warmup=1, repeats=3)
    assert res["device"] == "cpu"
    assert res["threads"] == torch.get_num_threads()
    assert res["input"] == "1x3x8x8"
    assert res["repeats"] == 3 and len(res["all_ms"]) == 3
    assert res["median_ms"] > 0 and all(t > 0 for t in res["all_ms"])
    assert "device_name" not in res


def test_latency_accepts_no_warmup_and_rejects_bad_counts():
    net = tiny_net()
    assert len(latency(net, (1, 3, 4, 4), warmup=0, repeats=1)["all_ms"]) == 1
    with pytest.raises(ValueError, match="warmup"):
        latency(net, (1, 3, 4, 4), warmup=-1)
    with pytest.raises(ValueError, match="repeats"):
        latency(net, (1, 3, 4, 4), repeats=0)


@pytest.mark.parametrize("scale", [4, 2])
def test_generator_flops_scale_exactly_from_a_small_probe(scale):
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4, scale=scale))  # x2 pixel-unshuffles its input by 2
    for side in (32, 128):
        assert generator_flops(net, side) == flops(net, (1, 3, side, side))
