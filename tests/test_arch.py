import torch

from torch import nn

from esrkd.arch import DiscArgs, RRDBArgs, RRDBNet, VGGStyleDiscriminator, conv_names, count_params


def test_rrdbnet_uses_basicsr_keys_and_upsamples_by_scale():
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4))
    keys = set(net.state_dict())
    for k in ("conv_first.weight", "body.0.rdb1.conv1.weight", "body.1.rdb3.conv5.bias",
              "conv_body.weight", "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.bias"):
        assert k in keys
    assert len(keys) == 2 + 2 * 3 * 5 * 2 + 5 * 2  # conv_first, 2 blocks x 3 RDBs x 5 convs, 5 tail convs
    assert net(torch.rand(1, 3, 5, 7)).shape == (1, 3, 20, 28)


def test_conv_names_are_the_built_networks_convs_in_order():
    for args in (RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4), RRDBArgs(num_feat=4, num_block=1, num_grow_ch=4, scale=2)):
        names = [name for name, m in RRDBNet(args).named_modules() if isinstance(m, nn.Conv2d)]
        assert conv_names(args) == names and len(names) == 1 + args.num_block * 15 + 5


def test_rrdbnet_x2_unshuffles():
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=1, num_grow_ch=4, scale=2))
    assert net.conv_first.in_channels == 12
    assert net(torch.rand(1, 3, 6, 8)).shape == (1, 3, 12, 16)


def test_forward_features_returns_the_requested_block_outputs():
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=3, num_grow_ch=4)).eval()
    x = torch.rand(2, 3, 6, 6)
    out, feats = net.forward_features(x, [0, 2])
    assert torch.equal(out, net(x))
    assert [f.shape for f in feats] == [(2, 8, 6, 6)] * 2
    expected = net.body[0](net.conv_first(x))
    assert torch.allclose(feats[0], expected)


def test_discriminator_matches_basicsr_shapes_at_128():
    d = VGGStyleDiscriminator(DiscArgs(num_feat=64, input_size=128))
    assert d.linear1.in_features == 64 * 8 * 4 * 4
    assert d(torch.rand(2, 3, 128, 128)).shape == (2, 1)
    small = VGGStyleDiscriminator(DiscArgs(num_feat=8, input_size=32))
    assert small.linear1.in_features == 8 * 8
    assert small(torch.rand(2, 3, 32, 32)).shape == (2, 1)


def test_count_params_counts_zeros_apart():
    conv = torch.nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight[0].zero_()
    assert count_params(conv) == (2 * 3 * 9 + 3, 2 * 3 * 9 + 3 - 18)
