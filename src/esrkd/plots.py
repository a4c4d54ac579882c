"""The report's figures (matplotlib, PNG): quality vs cost, training curves, a Fig. 2-style grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from esrkd import metrics  # noqa: E402
from esrkd.data import bicubic_upscale, read_image  # noqa: E402
from esrkd.outputs import atomic_file  # noqa: E402


def _save(fig: plt.Figure, path: Path, bottom: float = 0.0) -> None:
    fig.tight_layout(rect=(0, bottom, 1, 1))  # leave `bottom` free for a figure-wide legend
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def quality_vs(avg: pd.DataFrame, shown: list, x: str, xlabel: str, xscale: float, path: Path) -> None:
    """One panel per metric: every model's average quality against `x` (teachers squares, students dots)."""
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 4.4), squeeze=False)
    for ax, metric in zip(axes[0], shown):
        for role, marker in (("teacher", "s"), ("student", "o")):
            for prune, grp in avg[avg.role == role].groupby("teacher_prune"):
                ax.scatter(grp[x] * xscale, grp[metric.key], marker=marker, s=45, label=f"{role}, teacher pruned {prune:g}")
                if role == "student":
                    for r in grp.itertuples():
                        ax.annotate(str(r.width), (getattr(r, x) * xscale, getattr(r, metric.key)), fontsize=7,
                                    xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric.title + (" (lower is better)" if metric.lower_is_better else ""))
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(f"Quality vs {xlabel.split(' (')[0]}, averaged over the test sets (numbers: student width)")
    _save(fig, path, bottom=0.08 + 0.05 * ((len(labels) + 3) // 4))


def metric_vs_prune(t1: pd.DataFrame, shown: list, label: str, path: Path) -> None:
    """Table 1 as a figure: the student's (`label`, e.g. Student_16) quality against its teacher's prune ratio,
    ours and the paper's (`t1` in long form: teacher_prune, metric, ours, paper)."""
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], shown):
        rows = t1[t1.metric == metric.paper]
        ax.plot(rows.teacher_prune, rows.ours, "o-", label="ours")
        if rows.paper.notna().any():
            ax.plot(rows.teacher_prune, rows.paper, "s--", label="paper")
        ax.set_xlabel("teacher prune ratio")
        ax.set_ylabel(metric.title + (" (lower is better)" if metric.lower_is_better else ""))
        ax.set_xticks(rows.teacher_prune)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Table 1: {label} distilled from teachers pruned at each ratio")
    _save(fig, path)


def read_log(log: Path) -> pd.DataFrame:
    """A run's log/<phase>.tsv tables as one, in step order; a loss that a phase does not log is NaN there."""
    tables = [pd.read_csv(f, sep="\t") for f in Path(log).glob("*.tsv")]
    return pd.concat(tables).sort_values("step", ignore_index=True) if tables else pd.DataFrame(columns=["step"])


def loss_curve(log: pd.DataFrame, name: str) -> pd.DataFrame:
    """One loss over a whole run (step, name): the rows of a `read_log` table that log it."""
    if name not in log:
        return pd.DataFrame(columns=["step", name])
    return log.loc[log[name].notna(), ["step", name]].reset_index(drop=True)


def training_curves(logs: dict[str, tuple[Path, dict]], path: Path) -> None:
    """The losses of every training stage, from its log/<phase>.tsv tables, and its validation PSNR if it has one;
    `logs` maps a label to (log, line style)."""
    tables = {label: read_log(log) for label, (log, _) in logs.items()}  # each log read once, for every loss
    # and the validation PSNR (log/val.tsv) where a run scored one (val_every)
    names = ("l_pix", "l_g_total", "l_distill", "l_d") + (("psnr",) if any("psnr" in t for t in tables.values()) else ())
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, (_, style) in logs.items():
            curve = loss_curve(tables[label], name)
            if len(curve):
                ax.plot(curve.step, curve[name], label=label, **style)
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    handles = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=6, fontsize=7)
    fig.suptitle("Training losses (warm start, then GAN phase; each stage on its own iteration axis)")
    _save(fig, path, bottom=0.06 + 0.04 * ((len(handles) + 5) // 6))


def _crop_box(hr: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the `side` x `side` window with the most detail (gradient energy), so the crop shows edges."""
    gray = hr.astype(np.float64).mean(axis=2)
    energy = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    integral = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    h, w = energy.shape
    s = min(side, h, w)
    sums = integral[s:, s:] - integral[:-s, s:] - integral[s:, :-s] + integral[:-s, :-s]
    top, left = np.unravel_index(np.argmax(sums), sums.shape)
    return int(top), int(left)


def sr_grid(hr_path: Path, lr_path: Path, models: dict[str, Path], scale: int, crop_border: int, path: Path, side: int = 96) -> None:
    """Fig. 2 of the paper: the same crop from HR, bicubic and each model, with per-image PSNR/SSIM (Y)."""
    hr = read_image(hr_path)
    panels = {"HR": hr, "Bicubic": bicubic_upscale(read_image(lr_path), scale)}
    panels.update({label: read_image(sr) for label, sr in models.items()})
    top, left = _crop_box(hr, side)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.9), squeeze=False)
    for ax, (label, img) in zip(axes[0], panels.items()):
        ax.imshow(img[top : top + side, left : left + side], interpolation="nearest")
        title = label if label == "HR" else (
            f"{label}\n{metrics.psnr(img, hr, crop_border):.2f} dB / {metrics.ssim(img, hr, crop_border):.4f}")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{hr_path.stem}: {side}x{side} crop at ({left}, {top}); PSNR/SSIM on Y of the whole image", fontsize=9)
    _save(fig, path)


def val_curves(curves: dict[str, pd.DataFrame], path: Path) -> None:
    """Validation PSNR against iteration, one line per run (`curves`: label -> (step, psnr) table)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, curve in curves.items():
        ax.plot(curve.step, curve.psnr, marker=".", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation PSNR-Y (dB)")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    ax.set_title("G's EMA on the validation set during training")
    _save(fig, path)
