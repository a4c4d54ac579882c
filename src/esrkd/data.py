"""Images in, HR/LR pairs out: reading sources, the bicubic degradation, and training patches.

Images are uint8 RGB arrays (H, W, 3) on disk and in memory; tensors handed to networks are float
RGB in [0, 1], NCHW.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from bicubic_pytorch.core import imresize
from PIL import Image
from torch.utils.data import Dataset

from esrkd.errors import UserError

SKIMAGE_PREFIX = "skimage:"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# Photos that pip packages ship as files, by source prefix: (package, folder inside it). Located with find_spec,
# never imported: sporco and scikit-learn are installed with --no-deps for their images alone (README: Offline).
PACKAGED_FILES = {"sporco:": ("sporco", "data"), "sklearn:": ("sklearn", "datasets/images"),
                  "matplotlib:": ("matplotlib", "mpl-data/sample_data")}


@contextmanager
def open_image(path: Path, remedy: str) -> Iterator[Image.Image]:
    """PIL's Image.open of `path` (pixels decoded on demand); a decompression bomb, or a file PIL
    cannot read or decode in the `with` body, becomes a UserError, the latter saying `remedy`.

    PIL warns above Image.MAX_IMAGE_PIXELS (89,478,485, ~9459x9459) and raises only above twice that;
    we refuse from the warning on: SR images are ~2K (DIV2K's 2040x1356 is 2.8 MP), so a larger one is a
    mistake or an attack, and decoding it (and the float tensors made of it) would take gigabytes.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            yield im
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise UserError(f"{path}: too many pixels to decode safely ({str(err).rstrip('.')}); esrkd refuses images "
                        f"over {Image.MAX_IMAGE_PIXELS:,} pixels, so crop or downscale it, or remove it.") from None
    except UserError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{path}: cannot be read as an image ({err}); {remedy}.") from None


def read_image(path: Path) -> np.ndarray:
    """An 8-bit RGB image as (H, W, 3) uint8.

    Grayscale is replicated to RGB. Alpha and 16-bit (or float) images are refused rather than
    silently flattened or truncated: convert them to 8-bit RGB yourself, the way you want it.
    """
    with open_image(path, "replace or remove the file") as im:
        mode = im.mode
        deep = mode in ("I", "F") or mode.startswith("I;16") or any(";16" in str(t.args) for t in im.tile)
        if deep:  # PIL would truncate 16-bit RGB to its high byte and clip 16-bit gray to white
            raise UserError(f"{path}: is a 16-bit (or float) image; convert it to 8-bit RGB and re-run.")
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
            raise UserError(f"{path}: has an alpha channel; save it as RGB (without transparency) and re-run.")
        im.load()  # decode now, so a truncated file fails here and not mid-training
        return np.array(im.convert("RGB"))


def write_png(path: Path, image: np.ndarray) -> None:
    # zlib level 3, as BasicSR's extract_subimages writes: 2.5x faster than PIL's default 6, ~10% larger
    Image.fromarray(image).save(path, format="PNG", compress_level=3)


def _skimage_loader(name: str):
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise UserError(f"data source 'skimage:{name}': scikit-image ships no image of that name.")
    return loader


def _skimage_image(name: str) -> np.ndarray:
    image = _skimage_loader(name)()
    if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity): take the left view
        image = image[0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UserError(f"data source 'skimage:{name}': not an 8-bit RGB image (shape {image.shape}, {image.dtype}).")
    return image


def is_packaged(source: str) -> bool:
    """Whether a data source names an image a package ships (skimage:<name>, sporco:<name>, ...) rather than a folder."""
    return source.startswith(SKIMAGE_PREFIX) or source.startswith(tuple(PACKAGED_FILES))


def packaged_file(source: str) -> Path:
    """The file of a packaged photo such as sporco:barbara; a UserError names the source if it is not there."""
    prefix, name = source.split(":", 1)
    package, folder = PACKAGED_FILES[prefix + ":"]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"data source '{source}': the {package} package is not installed; `make setup` installs it.")
    base = Path(spec.submodule_search_locations[0]) / folder
    found = [p for p in sorted(base.glob(f"{name}.*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise UserError(f"data source '{source}': the {package} package ships no image of that name.")
    return found[0]


def check_packaged(sources: list[str]) -> None:
    """Refuse a packaged image that does not exist, without decoding any image (esrkd check)."""
    for source in filter(is_packaged, sources):
        _skimage_loader(source[len(SKIMAGE_PREFIX):]) if source.startswith(SKIMAGE_PREFIX) else packaged_file(source)


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted; other files are skipped with a warning naming them."""
    if not folder.is_dir():
        raise UserError(f"data folder {folder} does not exist; create it or fix the path in params.yaml (data).")
    files, skipped = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        (files if path.suffix.lower() in IMAGE_SUFFIXES else skipped).append(path)
    if skipped:
        warnings.warn(f"{folder}: skipping {len(skipped)} non-image file(s): {', '.join(p.name for p in skipped)}", stacklevel=2)
    if not files:
        raise UserError(f"data folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); add some or fix the path.")
    return files


def load_sources(sources: list[str]) -> list[tuple[str, np.ndarray]]:
    """(name, image) for every image named by `sources`: folders, skimage:<name>, or a photo another package
    ships (sporco:<name>, sklearn:<name>, matplotlib:<name>)."""
    images = []
    for source in sources:
        if source.startswith(SKIMAGE_PREFIX):
            name = source[len(SKIMAGE_PREFIX):]
            images.append((name, _skimage_image(name)))
        elif is_packaged(source):
            images.append((source.split(":", 1)[1], read_image(packaged_file(source))))
        else:
            images.extend((p.stem, read_image(p)) for p in list_images(Path(source)))
    names = [n for n, _ in images]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"data sources {sources} give several images named {dupes}; rename them so names are unique.")
    return images


def missing_folders(sources: list[str]) -> list[str]:
    """The folder sources that do not exist (a test set the user has not got, e.g. a non-public one)."""
    return [s for s in sources if not is_packaged(s) and not Path(s).is_dir()]


def crop_to_scale(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so both sides are multiples of `scale` (BasicSR's mod-crop)."""
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB `imresize(hr, 1/scale, 'bicubic')` on uint8, as DIV2K's LR images were made.

    Antialiased cubic kernel (a = -0.5) widened by `scale`, symmetric padding at the borders,
    rounded to uint8 like MATLAB's uint8 output. Uses bicubic-pytorch, a port of MATLAB's imresize.
    """
    if hr.shape[0] % scale or hr.shape[1] % scale:
        raise UserError(f"an HR image of {hr.shape[1]}x{hr.shape[0]} is not divisible by scale {scale}; crop it first.")
    return _imresize_uint8(hr, 1.0 / scale)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB `imresize(lr, scale, 'bicubic')` on uint8: the baseline every SR comparison shows."""
    return _imresize_uint8(lr, scale)


def _imresize_uint8(image: np.ndarray, scale: float) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1).to(torch.float64)
    return imresize(x, scale=scale).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


@dataclass(frozen=True)
class PreparedSet:
    hr: Path
    lr: Path

    @classmethod
    def at(cls, root: Path) -> PreparedSet:
        return cls(root / "HR", root / "LR")


def _given_lr(lr_sources: list[str], scale: int) -> dict[str, Path]:
    """LR files of the given folders by the name of their HR image: DIV2K's `0001x4.png` or `0001.png`."""
    files = {}
    for folder in lr_sources:
        for path in list_images(Path(folder)):
            name = path.stem[: -len(f"x{scale}")] if path.stem.endswith(f"x{scale}") else path.stem
            files[name] = path
    return files


def _starts(length: int, size: int, step: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, step))
    return starts if starts[-1] + size == length else [*starts, length - size]  # the last one flush with the edge


def subimage_boxes(height: int, width: int, size: int, step: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of BasicSR's extract_subimages crops (threshold 0): a `size` window
    every `step` pixels, plus one flush with the bottom/right edge; a side shorter than `size` is kept whole."""
    return [(top, left, min(size, height), min(size, width))
            for top in _starts(height, size, step) for left in _starts(width, size, step)]


def prepare_set(sources: list[str], scale: int, out: Path, min_hr_side: int = 0, lr_sources: list[str] | None = None,
                subimages: tuple[int, int] | None = None, shrink: int = 1) -> int:
    """Write out/HR/<name>.png (mod-cropped) and out/LR/<name>.png; return the number of pairs.

    With `shrink` > 1 each source is first downscaled by it (MATLAB bicubic) to become HR: a JPEG's 8x8
    blocks, which an SR model should not learn to restore, shrink below a pixel.

    LR is the MATLAB bicubic /scale of HR, or, with `lr_sources`, the user's own LR image of the same
    name (e.g. DIV2K_train_LR_bicubic/X4), which must be HR's size / scale. With `subimages` (size,
    step), both multiples of `scale`, each pair is cut into aligned sub-images <name>_s001.png, ...
    """
    images = load_sources(sources)
    given = _given_lr(lr_sources, scale) if lr_sources else None
    dirs = PreparedSet.at(out)
    dirs.hr.mkdir(parents=True)
    dirs.lr.mkdir(parents=True)
    count = 0
    for name, image in images:
        if shrink > 1:
            image = bicubic_downscale(crop_to_scale(image, shrink), shrink)
        hr = crop_to_scale(image, scale)
        if min(hr.shape[:2]) < max(min_hr_side, scale):
            raise UserError(
                f"image '{name}' ({image.shape[1]}x{image.shape[0]}) is smaller than "
                f"{max(min_hr_side, scale)} pixels on a side; remove it or lower the patch size."
            )
        if given is None:
            lr = bicubic_downscale(hr, scale)
        elif name not in given:
            raise UserError(f"data.train_lr {lr_sources}: no LR image for '{name}' ({name}x{scale}.png or {name}.png); add it or set data.train_lr: null.")
        else:
            lr = read_image(given[name])
            if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
                raise UserError(f"{given[name]}: {lr.shape[1]}x{lr.shape[0]} is not its HR image's "
                                f"{image.shape[1]}x{image.shape[0]} / {scale}; use LR images made from these HR images.")
        if subimages is None:
            write_png(dirs.hr / f"{name}.png", hr)
            write_png(dirs.lr / f"{name}.png", lr)
            count += 1
            continue
        for i, (top, left, h, w) in enumerate(subimage_boxes(*hr.shape[:2], *subimages), start=1):
            write_png(dirs.hr / f"{name}_s{i:03d}.png", hr[top : top + h, left : left + w])
            write_png(dirs.lr / f"{name}_s{i:03d}.png", lr[top // scale : (top + h) // scale, left // scale : (left + w) // scale])
            count += 1
    return count


def prepare_test_sets(test: dict[str, list[str]], scale: int, out: Path) -> dict[str, dict]:
    """Prepare each named test set into out/<name>, skipping a set whose folder is missing; return
    {"prepared": {name: count}, "missing": {name: folders}}, as out/sets.json holds it."""
    listing: dict[str, dict] = {"prepared": {}, "missing": {}}
    for name, sources in test.items():
        if gone := missing_folders(sources):
            listing["missing"][name] = gone
        else:
            listing["prepared"][name] = prepare_set(sources, scale, out / name)
    if not listing["prepared"]:
        raise UserError(f"params.yaml data.test: none of the test sets {sorted(listing['missing'])} was found; add at least one folder.")
    return listing


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding it."""
    with open_image(path, "re-run the prepare stage") as im:
        return im.height, im.width


Pair = tuple[str, np.ndarray | Path, np.ndarray | Path]  # (name, LR, HR): decoded images, or their files


def load_pairs(root: Path, scale: int, decode: bool = True) -> list[Pair]:
    """(name, lr, hr) for a prepared set, checked to fit each other at `scale`; with decode=False the
    images stay on disk and (name, lr_file, hr_file) come back, to be read when sampled."""
    dirs = PreparedSet.at(root)
    pairs = []
    for hr_path in list_images(dirs.hr):
        lr_path = dirs.lr / hr_path.name
        if not lr_path.is_file():
            raise UserError(f"{lr_path}: missing LR image for {hr_path}; re-run the prepare stage.")
        (h, w), (lh, lw) = image_size(hr_path), image_size(lr_path)
        if (h, w) != (lh * scale, lw * scale):
            raise UserError(f"{lr_path}: {lw}x{lh} is not HR {w}x{h} / {scale}; re-run prepare.")
        pairs.append((hr_path.stem, read_image(lr_path), read_image(hr_path)) if decode else (hr_path.stem, lr_path, hr_path))
    return pairs


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded as BasicSR's tensor2img does."""
    return tensor.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class PatchDataset(Dataset):
    """Aligned random LR/HR patches with flips and 90-degree rotations.

    Sample k is a pure function of (seed, k): the k-th patch is the same whatever the worker count,
    and a run can restart at any position of the stream. Pairs given as files are read when drawn
    (BasicSR's way with sub-images: little memory, however many processes and workers).
    """

    def __init__(self, pairs: list[Pair], scale: int, hr_patch: int, num_samples: int, seed: int):
        lr_patch = hr_patch // scale
        self.lr_sizes = [lr.shape[:2] if isinstance(lr, np.ndarray) else image_size(lr) for _, lr, _ in pairs]
        small = [name for (name, _, _), size in zip(pairs, self.lr_sizes) if min(size) < lr_patch]
        if small:
            raise UserError(f"training images {small} are smaller than the {hr_patch}-pixel HR patch; remove them or lower patch_size.")
        self.pairs, self.scale, self.lr_patch = pairs, scale, lr_patch
        self.num_samples, self.seed = num_samples, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, k])
        i = rng.integers(len(self.pairs))
        p, s, (h, w) = self.lr_patch, self.scale, self.lr_sizes[i]
        top, left = rng.integers(h - p + 1), rng.integers(w - p + 1)
        _, lr, hr = self.pairs[i]
        if isinstance(lr, Path):
            lr, hr = read_image(lr), read_image(hr)
        lr = lr[top : top + p, left : left + p]
        hr = hr[top * s : (top + p) * s, left * s : (left + p) * s]
        hflip, vflip, rot90 = rng.integers(2, size=3)
        if hflip:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        if vflip:
            lr, hr = lr[::-1], hr[::-1]
        if rot90:
            lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
        return to_tensor(lr), to_tensor(hr)
