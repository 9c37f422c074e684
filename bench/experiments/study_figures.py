"""The study's figures (docs/figures/): learning curves, tau and alpha, L_TS's gradients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from _common import mean_std
from study_rules import ALPHAS, SIZES, SMALL, TAUS, gain, label, select

from amid.evaluate.figures import save_png

CURVES = ("baseline", "kd", "kd, fixed teacher", "ts, alpha=0", "ts", "ts_ta", "amid",
          "amid, fixed teacher", "ccl", "kd (chosen)", "amid (chosen)")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(by_dataset: dict[str, list[dict]], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, len(by_dataset), figsize=(4.6 * len(by_dataset), 4.2),
                             squeeze=False)
    for ax, (name, records) in zip(axes[0], by_dataset.items(), strict=True):
        sizes = SIZES[name]
        xs = np.arange(len(sizes))
        for variant in CURVES:
            stats = [mean_std(r["test_student_top1"] for r in select(records, variant, s))
                     for s in sizes]
            if not any(stats):
                continue
            style = "--" if "chosen" in variant else "-"
            ax.errorbar(xs, [s[0] if s else np.nan for s in stats],
                        yerr=[s[1] if s else 0 for s in stats], label=variant, capsize=2,
                        marker="o", markersize=3, ls=style,
                        lw=2.2 if variant == "baseline" else 1.1,
                        color="black" if variant == "baseline" else None)
        ax.set_xticks(xs, [label(s) for s in sizes], fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("labelled training samples")
        ax.set_ylabel("student test Top-1 (%), 5 seeds")
    axes[0][0].legend(fontsize=6.5)
    save_png(fig, path)  # atomically, as the report's figures
    plt.close(fig)
    return path


def tau_alpha(by_dataset: dict[str, list[dict]], chosen: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(2, len(by_dataset), figsize=(4.6 * len(by_dataset), 7.5),
                             squeeze=False)
    for col, (name, records) in enumerate(by_dataset.items()):
        for size, marker in ((SMALL, "o"), (None, "s")):
            for method, ls in (("ts", ":"), ("amid", "-")):
                g = [gain(records, f"{method}, tau={t}", size) for t in TAUS]
                axes[0][col].errorbar(TAUS, [x[0] if x else np.nan for x in g],
                                      yerr=[x[1] if x else 0 for x in g], ls=ls,
                                      marker=marker, capsize=2,
                                      label=f"{method}, {label(size)}")
            curves = [("ts", 0.1, ":"), ("ts", 0.5, "-."), ("amid", chosen.get("tau"), "-")]
            for method, tau, ls in curves:
                g = [gain(records, f"{method}, tau={tau}, alpha={a}", size) for a in ALPHAS]
                if any(g):
                    axes[1][col].errorbar(ALPHAS, [x[0] if x else np.nan for x in g],
                                          yerr=[x[1] if x else 0 for x in g], ls=ls,
                                          marker=marker, capsize=2,
                                          label=f"{method} tau {tau}, {label(size)}")
        for row, xlabel in ((0, "tau (alpha 4)"), (1, "alpha")):
            ax = axes[row][col]
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xscale("log")
            ticks = TAUS if row == 0 else ALPHAS
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel(xlabel)
            ax.set_ylabel("student val Top-1 minus baseline (points)")
            ax.set_title(name)
            ax.legend(fontsize=6.5)
    save_png(fig, path)  # atomically, as the report's figures
    plt.close(fig)
    return path


def gradients(records: list[dict], name: str, path: Path) -> Path:
    """Per epoch, the gradient norm each term sends into the student encoder (mean over
    seeds), for baseline, ts at tau 0.1 and ts at tau 0.5, at the small end."""
    plt = _plt()
    settings = ("baseline", "ts, tau=0.1", "ts, tau=0.5")
    fig, axes = plt.subplots(1, len(settings), figsize=(4.6 * len(settings), 3.8),
                             sharey=True)
    for ax, setting in zip(axes, settings, strict=True):
        rows = select(records, setting, SMALL)
        for term in sorted({t for r in rows for t in r["grads"]}):
            curve = np.mean([r["grads"][term] for r in rows], axis=0)  # (epochs,)
            ax.plot(np.arange(1, len(curve) + 1), curve, label=term.removeprefix("grad_"))
        ax.set_yscale("log")
        ax.set_title(f"{name} @ {label(SMALL)}: {setting}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("grad norm into the student encoder")
        ax.legend(fontsize=7)
    save_png(fig, path)  # atomically, as the report's figures
    plt.close(fig)
    return path


def draw(by_dataset: dict[str, list[dict]], chosen: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [learning_curves(by_dataset, out / "learning_curves.png"),
            tau_alpha(by_dataset, chosen, out / "tau_alpha.png"),
            gradients(by_dataset["demo"], "demo", out / "l_ts_gradients.png")]
