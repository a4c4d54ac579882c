"""The real-students study (studies/students): its cells' tables, the seed spread, and a verdict on each claim.

A cell is one 23-block student (config.Cell). Its results are committed files: cells/<cell>/metrics/*.json
(the test pool, scored once at the end) and cells/<cell>/student/log/val.tsv (the validation set, scored every
distill.val_every iterations). The seed spread is the mean |difference| between cells that differ only in
their seed; a claim's difference smaller than twice the spread reads "within noise". A GAN-phase cell (gan > 0)
also scores its G at the end of the warm-up (metrics/*-warmup.json): its "before". A GAN-phase cell trained
without that snapshot has the warm-up cell it repeats batch for batch (its twin) as its "before".
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from esrkd import config, plots
from esrkd.data import prepare_test_sets
from esrkd.metrics import bicubic_baseline
from esrkd.outputs import atomic_file, write_json

TEST = ("psnr", "ssim", "lpips", "fid")  # the test pool's averages kept per cell
TEACHER_PRUNE = 0.3  # Table 2's teacher, the paper's choice
SNAPSHOT = "-warmup.json"  # a metrics file of G at the end of the warm-up (checkpoint.model_name's suffix)


def _val_at(curve: pd.DataFrame, step: int, name: str) -> float | None:
    """The validation score logged at the last step <= `step` (None before the first)."""
    done = curve[curve.step <= step]
    return float(done[name].iloc[-1]) if len(done) else None


def load_cells(p: config.Params, cells_dir: Path) -> pd.DataFrame:
    """One row per finished cell: its knobs, validation PSNR/SSIM at 1/4 and 1/2 of the warm-up and at the end of
    its run (after its GAN iterations), and its test-pool averages (with FID's sample count), and those of its
    end-of-warm-up snapshot (warmup_<metric>) where the cell scored one. Cells not finished yet are left out."""
    warmup = p.distill.warmup_iters
    rows = []
    for name, cell in p.cells.items():
        files = {f.name.endswith(SNAPSHOT): json.loads(f.read_text()) for f in (cells_dir / name / "metrics").glob("*.json")}
        if False not in files:
            continue
        m = files[False]
        log = plots.read_log(cells_dir / name / "student" / "log")
        curve = log.loc[log["psnr"].notna(), ["step", "psnr", "ssim"]] if "psnr" in log else pd.DataFrame(columns=["step", "psnr", "ssim"])
        row = {"cell": name, **cell.model_dump()}
        for label, step in (("q1", warmup // 4), ("half", warmup // 2), ("end", warmup + cell.gan)):
            row |= {f"val_psnr_{label}": _val_at(curve, step, "psnr"), f"val_ssim_{label}": _val_at(curve, step, "ssim")}
        row |= {f"test_{k}": m["average"].get(k) for k in TEST}
        row |= {f"warmup_{k}": files[True]["average"].get(k) if True in files else None for k in TEST}
        row["fid_samples"] = sum(s.get("fid_samples") or 0 for s in m["sets"].values())
        row["params_m"] = m["params_total"] / 1e6
        rows.append(row)
    return pd.DataFrame(rows)


def seed_spread(cells: pd.DataFrame, column: str) -> float | None:
    """Mean |difference| of `column` between cells whose knobs are equal but for the seed (None without a pair)."""
    knobs = [k for k in config.Cell.model_fields if k != "seed"]
    gaps = [abs(g[column].max() - g[column].min()) for _, g in cells.groupby(knobs) if g.seed.nunique() > 1]
    return float(np.mean(gaps)) if gaps else None


def verdict(gain: float | None, spread: float | None, lower_is_better: bool = False) -> str:
    """What a measured gain says about a claim that it is positive (negative, for a lower-is-better metric)."""
    if gain is None or np.isnan(gain):
        return "cannot tell (not measured yet)"
    if spread is None:
        return "cannot tell (no seed spread measured yet)"
    if abs(gain) < 2 * spread:
        return f"within noise (|{gain:+.3f}| < 2 x spread {spread:.3f})"
    return "supported" if (gain < 0) == lower_is_better else "not supported"


def load_teachers(teachers_dir: Path) -> pd.DataFrame:
    """The pruned teachers' test-pool averages: one row per teachers/<name>/metrics file."""
    rows = []
    for path in sorted(Path(teachers_dir).glob("*/metrics/*.json")):
        m = json.loads(path.read_text())
        stats = m["model"].get("prune_stats", {})
        rows.append({"teacher": path.parts[-3], "ratio": m["model"].get("prune"), "finetune": stats.get("finetune_iters", 0),
                     **{f"test_{k}": m["average"].get(k) for k in TEST}, "params_m": m["params_total"] / 1e6})
    return pd.DataFrame(rows)


def _pick(cells: pd.DataFrame, gan: bool = False, **knobs) -> pd.DataFrame:
    """The seed-0 cells with `knobs`, of the warm-up-only cells, or with `gan` of the GAN-phase ones."""
    if not len(cells):
        return cells
    return cells[(cells.seed == 0) & ((cells.gan > 0) == gan) & np.logical_and.reduce([cells[k] == v for k, v in knobs.items()])]


def _best(cells: pd.DataFrame, gan: bool = False, **knobs) -> pd.Series | None:
    """Of `_pick`'s cells, the one with the highest final validation PSNR."""
    pick = _pick(cells, gan, **knobs)
    return pick.loc[pick.val_psnr_end.idxmax()] if len(pick) and pick.val_psnr_end.notna().any() else None


def _by_ratio(cells: pd.DataFrame) -> list[pd.Series]:
    """Table 1's question holds the student's setting fixed: of the seed-0 warm-up features Student_16 cells, the
    setting (every knob but the ratio) trained from the most prune ratios, the best one on ties, one cell per ratio.
    A lighter or heavier λ tried at 0.3 alone is no row of it."""
    pick = _pick(cells, mode="features", width=16)
    if not len(pick):
        return []
    setting = [k for k in config.Cell.model_fields if k != "ratio"]
    _, best = max(pick.groupby(setting), key=lambda group: (group[1].ratio.nunique(), group[1].val_psnr_end.max()))
    return [best[best.ratio == r].iloc[0] for r in sorted(set(best.ratio))]


def _student(cells: pd.DataFrame, width: int) -> pd.Series | None:
    """The best features student of `width` from Table 2's teacher as the paper trains it: after its GAN phase
    when such a cell has finished, else after the warm-up."""
    after = _best(cells, gan=True, mode="features", width=width, ratio=TEACHER_PRUNE)
    return after if after is not None else _best(cells, mode="features", width=width, ratio=TEACHER_PRUNE)


def _teacher_of(teachers: pd.DataFrame, student: pd.Series) -> pd.Series | None:
    """The scored teacher a student learned from: same prune ratio, same bicubic fine-tune."""
    match = teachers[(teachers.ratio == student.ratio) & (teachers.finetune == student.finetune)] if len(teachers) else teachers
    return match.iloc[0] if len(match) else None


def _gain(a: pd.Series | None, b: pd.Series | dict | None, column: str) -> float | None:
    return None if a is None or b is None or a.get(column) is None or b.get(column) is None else float(a[column] - b[column])


def claims(cells: pd.DataFrame, teachers: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The paper's four claims, each with a verdict from the seed spread and the numbers behind it."""
    spread = {c: seed_spread(cells, c) if len(cells) else None for c in ("val_psnr_end", "test_psnr", "test_lpips", "test_fid")}
    none = _best(cells, mode="none", width=16, ratio=TEACHER_PRUNE)
    best16 = _best(cells, mode="features", width=16, ratio=TEACHER_PRUNE)
    out = []
    d = _gain(best16, none, "val_psnr_end")
    out.append(("(d) Feature distillation beats no distillation (the paper does not test it)",
                verdict(d, spread["val_psnr_end"]),
                f"validation PSNR at the end: best features cell {best16.cell if best16 is not None else 'n/a'} vs none: "
                f"{'n/a' if d is None else f'{d:+.3f} dB'}; test pool {_fmt(_gain(best16, none, 'test_psnr'), '+.3f')} dB"))
    students = [s for w in (16, 32, 48) if (s := _student(cells, w)) is not None]
    for label, column in (("(a) Every student beats the teacher in PSNR (paper: by about 1 dB)", "test_psnr"),
                          ("(b) The students' LPIPS is worse (higher) than the teacher's (paper: 0.12 -> 0.23)", "test_lpips")):
        gains = {f"Student_{int(s.width)} ({s.cell})": _gain(s, _teacher_of(teachers, s), column) for s in students}
        # "worse LPIPS" is a positive LPIPS gain: judge (b) as a higher-is-the-claim difference
        verdicts = {k: verdict(g, spread[column], lower_is_better=False) for k, g in gains.items()}
        overall = "cannot tell (no student or no teacher score yet)" if all(g is None for g in gains.values()) else (
            verdicts[min(gains, key=lambda k: gains[k] if gains[k] is not None else np.inf)])
        out.append((label, overall, "; ".join(f"{k} {_fmt(g, '+.3f')} vs the teacher ({verdicts[k]})" for k, g in gains.items())
                    or "no student scored yet"))
    fids = {float(s.ratio): s.test_fid for s in _by_ratio(cells)}
    others = {r: f for r, f in fids.items() if r != TEACHER_PRUNE and f is not None}
    margin = min(others.values()) - fids[TEACHER_PRUNE] if others and fids.get(TEACHER_PRUNE) is not None else None
    out.append(("(c) Among the pruned teachers, 0.3 gives the Student_16 with the lowest FID (paper, Table 1)",
                verdict(margin, spread["test_fid"]),
                "patch FID by prune ratio: " + (", ".join(f"{r:g}: {_fmt(f, '.2f')}" for r, f in fids.items()) or "none yet")))
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def cells_md(cells: pd.DataFrame) -> str:
    if not len(cells):
        return "No cell has finished yet."
    shown = cells[["cell", "ratio", "finetune", "width", "mode", "loss", "weight", "ramp", "fit", "seed", "gan", "d_iters",
                   "val_psnr_q1", "val_psnr_half", "val_psnr_end", "val_ssim_end", "test_psnr", "test_ssim", "test_lpips",
                   "test_fid", "fid_samples"]].copy()
    return shown.to_markdown(index=False, floatfmt=".4g")


def by_ratio_md(cells: pd.DataFrame) -> str:
    """Table 1's question: the warm-up Student_16 of one setting from each pruned teacher, on the test pool."""
    rows = _by_ratio(cells)
    if not rows:
        return "No features Student_16 has finished yet."
    table = pd.DataFrame(rows)[["ratio", "cell", "test_ssim", "test_fid", "test_psnr", "test_lpips", "val_psnr_end"]]
    table.columns = ["teacher pruned at", "cell", "SSIM", "patch FID", "PSNR", "LPIPS", "val PSNR (end)"]
    return table.to_markdown(index=False, floatfmt=".4g")


def _warmup_twin(cells: pd.DataFrame, cell: pd.Series) -> pd.Series | None:
    """The warm-up-only cell a GAN-phase cell repeats: the same knobs but for gan and d_iters."""
    knobs = [k for k in config.Cell.model_fields if k not in ("gan", "d_iters")]
    twin = cells[(cells.gan == 0) & np.logical_and.reduce([cells[k] == cell[k] for k in knobs])]
    return twin.iloc[0] if len(twin) else None


def warmup_gap(cells_dir: Path, before: str, after: str, warmup: int) -> float | None:
    """The largest |difference| of validation PSNR between two cells over the warm-up: 0 when the GAN-phase cell
    repeated its twin's warm-up exactly (same code, same machine); None when they share no validation step."""
    psnr = []
    for name in (before, after):
        log = plots.read_log(cells_dir / name / "student" / "log")
        psnr.append(log.loc[log["psnr"].notna() & (log.step <= warmup)].set_index("step")["psnr"])
    common = psnr[0].index.intersection(psnr[1].index)
    return float((psnr[0][common] - psnr[1][common]).abs().max()) if len(common) else None


def gan_phase_md(cells: pd.DataFrame, teachers: pd.DataFrame, cells_dir: Path, warmup: int) -> str:
    """Table 2's question: each width from Table 2's teacher before and after its GAN phase. "Before" is the GAN
    cell's own end-of-warm-up snapshot, or, for a cell without one, the warm-up cell it repeats (its twin)."""
    metrics = (("psnr", ".2f"), ("lpips", ".3f"), ("fid", ".1f"))

    def scores(s: pd.Series | None, label: str, prefix: str = "test") -> dict[str, str]:
        return {f"{k} {label}": "" if s is None else _fmt(s[f"{prefix}_{k}"], spec) for k, spec in metrics}

    rows = []
    teacher = teachers[(teachers.ratio == TEACHER_PRUNE) & (teachers.finetune == 0)] if len(teachers) else teachers
    if len(teacher):
        rows.append({"model": f"teacher (pruned {TEACHER_PRUNE:g})", "params (M)": f"{teacher.iloc[0].params_m:.2f}",
                     **scores(teacher.iloc[0], "before")})
    for width in (16, 32, 48):
        after = _best(cells, gan=True, mode="features", width=width, ratio=TEACHER_PRUNE)
        if after is not None and pd.notna(after.warmup_psnr):  # the same run at the end of its warm-up
            before, name, prefix, gap = after, f"{after.cell} at {warmup}", "warmup", "0 (same run)"
        else:
            before = _warmup_twin(cells, after) if after is not None else _best(cells, mode="features", width=width, ratio=TEACHER_PRUNE)
            name, prefix = ("not run yet" if before is None else before.cell), "test"
            gap = _fmt(warmup_gap(cells_dir, before.cell, after.cell, warmup) if before is not None and after is not None else None, ".3f")
        if before is None and after is None:
            continue
        rows.append({"model": f"Student_{width}", "params (M)": f"{(after if before is None else before).params_m:.2f}",
                     "before": name, **scores(before, "before", prefix),
                     "after": "not run yet" if after is None else after.cell, **scores(after, "after"),
                     "warm-up gap (dB)": gap})
    if not rows:
        return "No student of Table 2 has finished yet."
    columns = ["model", "params (M)", "before", *scores(None, "before"), "after", *scores(None, "after"), "warm-up gap (dB)"]
    return pd.DataFrame(rows).reindex(columns=columns).fillna("").to_markdown(index=False, disable_numparse=True)


def write_study(p: config.Params, cells_dir: Path, teachers_dir: Path, bicubic: dict[str, float], out: Path) -> dict:
    """reports/students.md, reports/val_curves.png and reports/metrics.json of the study."""
    cells, teachers = load_cells(p, cells_dir), load_teachers(teachers_dir)
    items = claims(cells, teachers)
    curves = {}
    for name in cells.cell if len(cells) else []:
        log = plots.read_log(cells_dir / name / "student" / "log")
        if "psnr" in log:
            curves[name] = log.loc[log["psnr"].notna(), ["step", "psnr"]]
    out.mkdir(parents=True, exist_ok=True)
    plots.val_curves(curves, out / "val_curves.png")
    spread = seed_spread(cells, "val_psnr_end") if len(cells) else None
    lines = [
        "# Real students: 23-block students of RealSR pruned as the paper profile prunes it",
        "",
        f"Protocol: PSNR-Y / SSIM-Y with a {p.crop_border}-pixel border cropped; validation = {', '.join(p.data.val)} "
        f"(shrunk x{p.data.val_shrink}), scored every {p.distill.val_every} iterations; test pool = "
        f"{', '.join(s for v in p.data.test.values() for s in v)}, scored at the end; FID over {p.evaluate.fid_patch_size}x"
        f"{p.evaluate.fid_patch_size} patches (fid_samples per model in the table). Every cell: "
        f"{p.distill.warmup_iters} warm-up iterations (then a GAN-phase cell's `gan` ones), batch {p.distill.batch_size}, "
        f"HR patch {p.distill.patch_size}, lr {p.distill.lr:g}, EMA {p.distill.ema_decay:g}.",
        "",
        f"Bicubic on the test pool: PSNR {bicubic['psnr']:.2f} dB, SSIM {bicubic['ssim']:.4f}.",
        "",
        "## Teachers on the test pool",
        "",
        teachers.to_markdown(index=False, floatfmt=".4g") if len(teachers) else "No teacher scored yet.",
        "",
        "## Cells",
        "",
        cells_md(cells),
        "",
        "## Table 1's question: which pruned teacher? (Student_16, warm-up only)",
        "",
        by_ratio_md(cells),
        "",
        "## Table 2's question: the widths, before and after the GAN phase",
        "",
        f"*after*: the cell after its warm-up ({p.distill.warmup_iters} iterations) and its GAN phase (L1 + perceptual "
        "+ RaGAN + distillation, D' trained first against the teacher's SR); *before*: the same cell's student at the "
        "end of its warm-up, or, for a cell trained without that snapshot, the warm-up cell it repeats. *warm-up gap*: "
        "the largest validation-PSNR difference between that cell and the GAN cell over the warm-up (0: repeated exactly).",
        "",
        gan_phase_md(cells, teachers, cells_dir, p.distill.warmup_iters),
        "",
        f"Seed spread (mean |difference| of the final validation PSNR between cells that differ only in seed): "
        f"{'not measured yet' if spread is None else f'{spread:.3f} dB'}. A difference under twice it reads *within noise*.",
        "",
        "## The paper's claims",
        "",
        *(f"{i}. {claim}. — **{v}**. {evidence}." for i, (claim, v, evidence) in enumerate(items, 1)),
        "",
        "![validation PSNR](val_curves.png)",
        "",
    ]
    with atomic_file(out / "students.md") as tmp:
        tmp.write_text("\n".join(lines))
    summary = {"cells": {r.cell: {"val_psnr": r.val_psnr_end, "test_psnr": r.test_psnr, "test_lpips": r.test_lpips}
                         for r in cells.itertuples()} if len(cells) else {},
               "seed_spread_val_psnr": spread, "claims": {claim.split(")")[0].strip("("): v for claim, v, _ in items}}
    write_json(out / "metrics.json", summary)
    return summary


def bicubic_on_test(p: config.Params) -> dict[str, float]:
    """Bicubic's PSNR/SSIM on the study's test pool, prepared in a temporary folder from the packaged photos."""
    with tempfile.TemporaryDirectory() as tmp:
        prepare_test_sets(p.data.test, p.base.scale, Path(tmp))
        return bicubic_baseline(Path(tmp), p.base.scale, p.crop_border, p.evaluate.y_channel)
