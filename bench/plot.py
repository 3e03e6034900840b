"""One PNG: delivery-latency distributions of both modes per level, on a log axis."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.stats import LevelResult, percentile


def plot(results: Sequence[LevelResult], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r.level for r in results})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    colors = {"realtime": "#1f77b4", "polling": "#d62728"}
    positions, data, tick_labels, box_colors = [], [], [], []
    for i, level in enumerate(levels):
        for j, mode in enumerate(("realtime", "polling")):
            r = next((x for x in results if x.mode == mode and x.level == level), None)
            if r is None or not r.delivery_ms:
                continue
            positions.append(i * 3 + j)
            data.append([max(v, 0.01) for v in r.delivery_ms])
            box_colors.append(colors[mode])
        tick_labels.append((i * 3 + 0.5, f"{level} concurrent"))
    if data:
        parts = ax.violinplot(data, positions=positions, showmedians=True, widths=0.9)
        for body, color in zip(parts["bodies"], box_colors, strict=True):
            body.set_facecolor(color)
            body.set_alpha(0.55)
    ax.set_yscale("log")
    ax.set_xticks([t for t, _ in tick_labels], [label for _, label in tick_labels])
    ax.set_ylabel("delivery: answer committed → tool call returns (ms, log)")
    ax.set_title("Answer delivery latency")
    ax.grid(axis="y", which="both", alpha=0.3)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, alpha=0.6, label=m) for m, c in colors.items()])

    ax2 = axes[1]
    for mode, color in colors.items():
        xs, p50, p99 = [], [], []
        for level in levels:
            r = next((x for x in results if x.mode == mode and x.level == level), None)
            if r is None or not r.delivery_ms:
                continue
            xs.append(level)
            p50.append(percentile(r.delivery_ms, 50))
            p99.append(percentile(r.delivery_ms, 99))
        if xs:
            ax2.plot(xs, p50, "o-", color=color, label=f"{mode} p50")
            ax2.plot(xs, p99, "s--", color=color, alpha=0.7, label=f"{mode} p99")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("concurrent waiting calls")
    ax2.set_ylabel("ms (log)")
    ax2.set_title("p50 / p99 by concurrency")
    ax2.grid(which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(
        f"hitl-relay: Realtime push vs polling (500 ms → 2 s backoff) — {machine}", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
