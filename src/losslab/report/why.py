"""The report's "Why the losses differ" section: what the ``diag/*`` metrics show per loss, the exact gradient
each loss puts on the true logit as a function of confidence (with the measured points), and — when the sweep
varies ``data.label_noise`` — how each loss's test score degrades with noisy training labels.

Every sentence is built from the numbers of this sweep (or from each loss's exact gradient), never canned.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from losslab.paths import config_dir
from losslab.report import collect, why_plots
from losslab.report.render import Document

NOISE = "param:data.label_noise"
CURVE_KEYS = [key for key, _ in why_plots.CURVE_PANELS]
P_GRID = np.concatenate([np.logspace(-15, -1, 561), np.linspace(0.1, 0.9, 321)[1:-1], 1 - np.logspace(-1, -7, 241)])


# --- which runs ---------------------------------------------------------------------------------------

def noise_levels(runs: pd.DataFrame) -> list[float]:
    """The distinct ``data.label_noise`` values of the runs (empty when the runs never logged it)."""
    if NOISE not in runs:
        return []
    return sorted({float(v) for v in pd.to_numeric(runs[NOISE], errors="coerce").dropna()})


def diagnostic_runs(runs: pd.DataFrame, select_metric: str = "best_val/f1_macro") -> pd.DataFrame:
    """The runs whose diagnostics are compared: the cleanest labels, then per loss the variant (other settings)
    with the best mean validation score, so that each loss is seen once, as it trains best."""
    levels = noise_levels(runs)
    if len(levels) > 1:
        runs = runs[pd.to_numeric(runs[NOISE], errors="coerce") == levels[0]]
    keys = [k for k in collect.varying_keys(runs) if k != NOISE[len("param:"):]]
    if not keys or select_metric not in runs:
        return runs
    variant = runs.apply(lambda row: collect.variant_label(row, keys), axis=1)
    means = runs.assign(_v=variant).groupby(["loss", "_v"])[select_metric].mean().dropna()
    best = {loss: v for (loss, v) in means.groupby(level=0).idxmax().tolist() if loss}
    return runs[[best.get(loss) == v for loss, v in zip(runs["loss"], variant)]]


def loss_config(name: str, runs: pd.DataFrame) -> Any | None:
    """``conf/loss/<name>.yaml`` with the values the runs logged (``loss.<key>`` params); None without a file."""
    import yaml
    from omegaconf import OmegaConf

    path = config_dir() / "loss" / f"{name}.yaml"
    if not path.is_file():
        return None
    cfg = OmegaConf.load(path)
    row = runs[runs["loss"] == name].head(1)
    for key in [k for k in cfg if not str(k).startswith("_") and k != "name"]:
        column = f"param:loss.{key}"
        if not row.empty and column in row and isinstance(row[column].iloc[0], str):
            cfg[key] = yaml.safe_load(row[column].iloc[0])
    return cfg


# --- numbers -------------------------------------------------------------------------------------------

def import_gradient_stack() -> None:
    """Import what ``exact_gradients`` runs (torch and the losses' own code, ~1.5 s here): a sweep's parent does it in
    a thread while its workers train the linear baseline, before the report needs it. Nothing that phase imports
    itself (scikit-learn, scipy) is in this set, so the two threads never import the same module."""
    import torch  # noqa: F401

    from losslab.model import losses  # noqa: F401


def exact_gradients(losses: Sequence[str], runs: pd.DataFrame) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]],
                                                                          dict[str, str], dict[str, str]]:
    """Per loss: (p_true grid, |∂L/∂z_true| of one row) for two classes, through the loss's own code in float32
    (so clamps and roundings show); the first paragraph of its docstring (its formula); its activation."""
    import torch

    from losslab.model.losses import build_loss

    z = torch.tensor(np.log(P_GRID / (1 - P_GRID)), dtype=torch.float32)
    curves, formulas, activations = {}, {}, {}
    for name in losses:
        cfg = loss_config(name, runs)
        if cfg is None:
            continue
        loss = build_loss(cfg, class_counts=[1, 1])
        # softmax: logits (-z/2, z/2) give p_true = sigmoid(z); per-class sigmoids: (-z, z) give sigmoid(z)
        logits = (torch.stack([-z, z], 1) if loss.activation == "sigmoid" else torch.stack([-z / 2, z / 2], 1))
        logits.requires_grad_()
        y = torch.ones(len(z), dtype=torch.long)
        (grad,) = torch.autograd.grad(loss(logits, y) * len(z), [logits])  # every row's own loss
        curves[name] = (P_GRID, grad[:, 1].abs().double().numpy())
        formulas[name] = " ".join((type(loss).__doc__ or "").split("\n\n")[0].split()).replace("``", "`")
        activations[name] = loss.activation
    return curves, formulas, activations


def at(curve: tuple[np.ndarray, np.ndarray], p: float) -> float:
    return float(np.interp(math.log(p / (1 - p)), np.log(curve[0] / (1 - curve[0])), curve[1]))


def sigmoid_saturation() -> float:
    """The smallest logit whose float32 sigmoid is exactly 1.0 (≈ 16.6)."""
    import torch

    grid = torch.linspace(10, 25, 15001, dtype=torch.float32)
    return float(grid[torch.sigmoid(grid) == 1.0][0])


def last_values(runs: pd.DataFrame, losses: Sequence[str]) -> pd.DataFrame:
    """Per loss, the mean over its runs of each metric's last logged value (NaN-aware)."""
    numeric = [c for c in runs.columns if c.startswith(("diag/", "train/loss", "test/"))]
    table = runs[runs["loss"].isin(losses)].groupby("loss")[numeric].mean(numeric_only=True)
    return table.reindex([loss for loss in losses if loss in table.index])


def first_values(curves: dict[str, dict[str, list[pd.Series]]], key: str, loss: str) -> float:
    series = [s for s in curves.get(key, {}).get(loss, []) if len(s)]
    return float(np.mean([s.sort_index().iloc[0] for s in series])) if series else math.nan


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def g(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.3g}"


# --- sentences -----------------------------------------------------------------------------------------

def gradient_sentences(last: pd.DataFrame, exact: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[str]:
    out = []
    if exact:
        probe = 0.01
        ranked = sorted(exact, key=lambda loss: -at(exact[loss], probe))
        strongest, weakest = at(exact[ranked[0]], probe), max(at(exact[ranked[-1]], probe), 1e-30)
        ce_like = [loss for loss in ranked if at(exact[loss], probe) > 0.5 * strongest]
        out.append(f"Exact push on the true logit of a row the model gives p(true) = {probe}: "
                   + ", ".join(f"`{loss}` {g(at(exact[loss], probe))}" for loss in ranked)
                   + f". Within a factor 2 of the strongest: {', '.join(f'`{x}`' for x in ce_like)}; the weakest "
                   f"(`{ranked[-1]}`) pushes {strongest / weakest:.0f}× "
                   "less than the strongest on such a confident mistake.")
    if {"diag/grad_logit_wrong", "diag/grad_logit_correct"} <= set(last.columns):
        both = last[["diag/grad_logit_wrong", "diag/grad_logit_correct"]].dropna()
        if both.empty:
            out.append("No sampled training row was confidently wrong (p(true) < 0.05) at the last epoch in any "
                       "run, so only the exact curves are drawn for that side.")
        else:
            ratio = (both["diag/grad_logit_wrong"] / both["diag/grad_logit_correct"]).sort_values(ascending=False)
            wrong, right = both["diag/grad_logit_wrong"], both["diag/grad_logit_correct"]
            parts = [f"`{loss}` {g(wrong[loss])} vs {g(right[loss])} ({r:.2g}×)" for loss, r in ratio.items()]
            weak = [f"`{loss}`" for loss, r in ratio.items() if r < 1]
            out.append("Measured at the last epoch, mean |∂L/∂z_true| on confidently wrong vs on correctly predicted "
                       "training rows: " + "; ".join(parts) + "."
                       + (f" {', '.join(weak)} pushed its confident mistakes *less* than the rows it already got "
                          "right: it has given up on them." if weak else
                          " Every loss pushed its confident mistakes harder than its correct rows."))
    return out


def health_sentences(last: pd.DataFrame, curves: dict[str, dict[str, list[pd.Series]]], frame: pd.DataFrame,
                     activations: dict[str, str], classes: int) -> list[str]:
    out = []
    if "diag/max_abs_logit" in last:
        limit = sigmoid_saturation()
        grown = last["diag/max_abs_logit"].dropna().sort_values(ascending=False)
        if not grown.empty:
            top = grown.index[0]
            start = first_values(curves, "diag/max_abs_logit", top)
            text = (f"Largest |logit| at the last epoch: `{top}` {g(grown.iloc[0])} (epoch 1: {g(start)})"
                    + (f", smallest `{grown.index[-1]}` {g(grown.iloc[-1])}." if len(grown) > 1 else "."))
            past = [loss for loss, v in grown.items() if v >= limit]
            sigmoid_past = [loss for loss in past if activations.get(loss) == "sigmoid"]
            if sigmoid_past:
                text += (f" {', '.join(f'`{x}`' for x in sigmoid_past)} went past {limit:.1f}, where a float32 "
                         "sigmoid is exactly 1.0: BCELoss on such outputs clamps its log at −100 and passes no "
                         "gradient (`bce` computes the same loss from the logits and keeps it).")
            elif past:
                text += f" {', '.join(f'`{x}`' for x in past)} went past {limit:.1f} (a float32 sigmoid's 1.0)."
            out.append(text)
    if "diag/saturated_right" in last:
        share = last["diag/saturated_right"].dropna().sort_values(ascending=False)
        if len(share) > 1:
            spread = (f"from {pct(share.iloc[0])} (`{share.index[0]}`) down to {pct(share.iloc[-1])} "
                      f"(`{share.index[-1]}`)" if share.iloc[0] > share.iloc[-1] else f"{pct(share.iloc[0])} for all")
            wrong = ", ".join(f"`{k}` {pct(v)}" for k, v in last["diag/confident_wrong"].dropna().items())
            out.append(f"Rows saturated right (p(true) > 0.99) at the last epoch: {spread}; confidently wrong: "
                       f"{wrong}.")
    if "diag/grad_norm_input" in last:
        norms = last["diag/grad_norm_input"].dropna().sort_values(ascending=False)
        if len(norms) > 1 and norms.iloc[-1] > 0 and norms.iloc[0] / norms.iloc[-1] >= 1.5:
            ratio = norms.iloc[0] / norms.iloc[-1]
            out.append(f"Input-layer gradient norm at the last epoch: largest `{norms.index[0]}` {g(norms.iloc[0])}, "
                       f"smallest `{norms.index[-1]}` {g(norms.iloc[-1])} ({ratio:.0f}× smaller"
                       + (": its first layer barely learns any more)." if ratio >= 10 else ")."))
    if "diag/dead_units" in last:
        dead = last["diag/dead_units"].dropna()
        slopes = last.get("diag/prelu_slope_mean", pd.Series(dtype=float)).dropna()
        if not dead.empty:
            worst = dead.idxmax()
            out.append((f"Dead hidden units (PReLU input ≤ 0 on every sampled row): at most {pct(dead.max())} "
                        f"(`{worst}`)" if dead.max() > 0 else "No hidden unit was dead under any loss")
                       + (f"; mean PReLU slopes ended between {slopes.min():.2f} and {slopes.max():.2f}, so negative "
                          "inputs still pass a gradient." if not slopes.empty else "."))
    if "kl_probs" in last.index and "train/loss" in last:
        p = -last.loc["kl_probs", "train/loss"]
        out.append(f"`kl_probs` (KLDivLoss fed probabilities) ended with train/loss {-p:.3f}: it is −mean p(true), "
                   f"so its training rows averaged p(true) = {p:.3f}; it maximises that mean, not a divergence.")
    primary = "test/f1_macro"
    if {"mse", "mse_lecture"} <= set(frame["loss"]) and primary in frame:
        pair = frame[frame["loss"].isin(["mse", "mse_lecture"])].pivot_table(index="seed", columns="loss",
                                                                               values=primary).dropna()
        if not pair.empty:
            delta = float((pair["mse_lecture"] - pair["mse"]).abs().max())
            out.append(f"`mse_lecture` (the slide's 1/(2N)·Σ) vs `mse` (nn.MSELoss, 1/(N·C)): the slide's value is "
                       f"C/2 = {classes / 2:g} times nn.MSELoss' with C = {classes}; largest |Δ {primary}| over "
                       f"{len(pair)} seed(s): {delta:.4f}"
                       + (" — the same loss here." if classes == 2 and delta < 1e-6 else "."))
    return out


# --- the section ---------------------------------------------------------------------------------------

def section(doc: Document, uri: str, runs: pd.DataFrame, losses: Sequence[str], out: Path,
            primary: str = "test/f1_macro") -> None:
    """Write the section into ``doc`` (figures into ``out``) from the sweep's FINISHED runs ``runs``."""
    doc.heading("Why the losses differ")
    runs = runs[[(config_dir() / "loss" / f"{loss}.yaml").is_file() for loss in runs["loss"].astype(str)]]
    if runs.empty:
        doc.paragraph("No run of this sweep trained with a loss of `conf/loss/`: nothing to explain.", note=True)
        return
    order = [loss for loss in losses if loss in set(runs["loss"])] + sorted(set(runs["loss"].dropna()) - set(losses))
    base = diagnostic_runs(runs)
    has_diag = any(c.startswith("diag/") and base[c].notna().any() for c in base.columns)
    levels = noise_levels(runs)
    scope = f" at the lowest label noise ({levels[0]:g})" if len(levels) > 1 else ""
    exact, formulas, activations = exact_gradients(order, base)
    if has_diag:
        doc.paragraph(f"Each run measured its loss's health at the end of every epoch on a fixed sample of training "
                      f"rows (`diag/*` in MLflow; README \"What the diagnostics mean\"){scope}; "
                      f"{len(base)} runs, means over seeds.")
        curves = collect.histories(uri, base["run_id"], CURVE_KEYS)
        by_loss = {key: {loss: [curves[i][key] for i in base.loc[base["loss"] == loss, "run_id"]
                                if key in curves.get(i, {})] for loss in order} for key in CURVE_KEYS}
        last = last_values(base, order)
        path = why_plots.diagnostics_curves(by_loss, order, out / "why_diagnostics.png")
        if path:
            doc.image(path, "diagnostics per epoch")
        columns = [("diag/max_abs_logit", "max abs logit"), ("diag/saturated_right", "saturated right"),
                   ("diag/confident_wrong", "confidently wrong"), ("diag/margin_mean", "mean margin"),
                   ("diag/grad_logit_wrong", "grad, wrong rows"), ("diag/grad_logit_correct", "grad, right rows"),
                   ("diag/grad_norm_input", "grad norm input"), ("diag/dead_units", "dead units")]
        shown = [(k, label) for k, label in columns if k in last]
        doc.table(["loss", *[label for _, label in shown], "formula"],
                  [[loss, *[g(float(last.loc[loss, k])) for k, _ in shown], formulas.get(loss, "").replace("|", "∣")]
                   for loss in last.index])
        classes = sum(1 for c in runs.columns if c.startswith("test/f1_") and c != "test/f1_macro") or 2
        doc.bullets(health_sentences(last, by_loss, runs, activations, classes))
    else:
        last = pd.DataFrame()
        doc.paragraph("No run of this sweep logged `diag/*` metrics (trained with `diagnostics=false`, or before "
                      "diagnostics existed): only the exact gradient curves are shown.", note=True)
    measured = {}
    for loss in (last.index if has_diag else []):
        row = last.loc[loss]
        measured[loss] = [(float(row.get("diag/p_true_wrong", math.nan)), float(row.get("diag/grad_logit_wrong",
                                                                                          math.nan)), "wrong"),
                          (float(row.get("diag/p_true_correct", math.nan)),
                           float(row.get("diag/grad_logit_correct", math.nan)), "correct")]
    if exact:
        doc.image(why_plots.gradient_vs_confidence(exact, measured, out / "why_gradients.png"),
                  "gradient vs confidence")
    doc.bullets(gradient_sentences(last, exact))
    if len(levels) > 1:
        noise_part(doc, runs, order, levels, out, primary)


def noise_part(doc: Document, runs: pd.DataFrame, losses: Sequence[str], levels: list[float], out: Path,
               primary: str) -> None:
    """Test score vs the share of flipped training labels: figure, table, who degrades least."""
    kind = ", ".join(sorted(set(runs.get("param:data.label_noise_type", pd.Series(["symmetric"])).dropna())))
    table = runs.assign(noise=pd.to_numeric(runs[NOISE], errors="coerce"))[["loss", "noise", primary, "seed"]]
    table = table.dropna(subset=["noise", primary])
    table = table[table["loss"].isin(losses)].set_index("loss").loc[[x for x in losses if x in set(table["loss"])]]
    table = table.reset_index()
    doc.heading("Robustness to label noise", 3)
    doc.image(why_plots.score_vs_noise(table, primary, kind, out / "why_noise.png"), "score vs label noise")
    means = table.pivot_table(index="loss", columns="noise", values=primary, aggfunc="mean")
    low, high = levels[0], levels[-1]
    drop = (means[low] - means[high]).dropna().sort_values()
    doc.table(["loss", *[f"noise {n:g}" for n in means.columns], f"drop {low:g} → {high:g}"],
              [[loss, *[float(means.loc[loss, n]) for n in means.columns], float(drop.get(loss, math.nan))]
               for loss in drop.index])
    if drop.empty:
        return
    flipped = runs.assign(noise=pd.to_numeric(runs[NOISE], errors="coerce"))
    counts = pd.to_numeric(flipped.get("param:dataset.flipped_labels", pd.Series(dtype=float)), errors="coerce")
    per_level = flipped.assign(f=counts).groupby("noise")["f"].mean().dropna()
    best_high = means[high].dropna().idxmax()
    spread = table[table["noise"] == high].groupby("loss")[primary].std(ddof=1).dropna()
    seeds = int(table.groupby(["loss", "noise"]).size().min())
    gap = float(drop.iloc[-1] - drop.iloc[0])
    caution = ([f"Seed spread (std) at {high:g} noise: {spread.min():.3f}–{spread.max():.3f} with {seeds} seed(s) per "
                f"loss; the drops span {gap:.3f}, "
                + ("less than the largest spread: this ranking is not resolved, run more seeds before trusting it."
                   if gap < spread.max() else "more than the largest spread.")] if len(spread) else [])
    least, most = drop.head(min(3, len(drop))), drop.iloc[min(3, len(drop)):].tail(2)
    doc.bullets([
        f"{primary} from {low:g} to {high:g} of the training labels flipped ({kind}): degrade least "
        + ", ".join(f"`{loss}` ({-d:+.3f})" for loss, d in least.items())
        + ("; degrade most " + ", ".join(f"`{loss}` ({-d:+.3f})" for loss, d in most.items()) if len(most) else "")
        + ".",
        f"At {high:g} noise the best {primary} is `{best_high}`'s ({means.loc[best_high, high]:.3f}); at {low:g} "
        f"it is `{means[low].idxmax()}`'s ({means[low].max():.3f}).",
        *caution,
        *(["Labels flipped per run (dataset.flipped_labels, mean): "
           + ", ".join(f"{n:g} → {c:.0f}" for n, c in per_level.items()) + "."] if not per_level.empty else []),
    ])
