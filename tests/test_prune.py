import pytest
import torch

from esrkd.arch import RRDBArgs, RRDBNet, count_params
from esrkd.prune import prunable, prune_global_l1


def _net():
    torch.manual_seed(0)
    net = RRDBNet(RRDBArgs(num_feat=8, num_block=2, num_grow_ch=4))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 1e-3)  # no exact zeros, like trained weights
    return net


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.8])
def test_exactly_ratio_of_conv_weights_become_zero(ratio):
    net = _net()
    weights = [getattr(m, n) for m, n in prunable(net)]
    n = sum(w.numel() for w in weights)
    before = torch.cat([w.detach().abs().flatten() for w in weights])
    stats = prune_global_l1(net, ratio)
    after = torch.cat([getattr(m, nm).detach().flatten() for m, nm in prunable(net)])
    # conv_first 3*8*9; per RDB (8*4 + 12*4 + 16*4 + 20*4 + 24*8)*9 = 3744, x3 RDBs x2 blocks;
    # conv_body/up1/up2/hr 4 * 8*8*9; conv_last 8*3*9
    assert stats["prunable_weights"] == n == 216 + 6 * 3744 + 4 * 576 + 216 == 25_200
    assert stats["zero_weights"] == round(ratio * n) == int((after == 0).sum())
    total, nonzero = count_params(net)
    assert stats["params_total"] == total and stats["params_nonzero"] == nonzero == total - round(ratio * n)
    if ratio:
        assert before[after == 0].max() <= before[after != 0].min()  # the smallest magnitudes went
    assert not any(hasattr(m, "weight_orig") for m, _ in prunable(net))  # permanent: no masks left
    assert set(net.state_dict()) == set(_net().state_dict())  # BasicSR keys unchanged


def test_ratio_out_of_range():
    with pytest.raises(ValueError, match=r"prune ratio 1.0 must be in \[0, 1\)"):
        prune_global_l1(_net(), 1.0)
