"""The report's charts as PNG files.

Uses matplotlib's object API (Figure) rather than pyplot: no global state and no GUI backend, so charts
render the same in a worker process, a test, or a headless server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from worker.report.analysis import Comparison, MeasureRow
from worker.report.metrics import find_measure

# Tufte-ish defaults: one colour per configuration, the same in every chart of a report.
PALETTE = colormaps["tab10"].colors


def _colors(c: Comparison) -> dict[str, Any]:
    return {cell.label: PALETTE[i % len(PALETTE)] for i, cell in enumerate(c.cells)}


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _epoch_chart(
    lines: list[tuple[str, list[tuple[int, float]], str, Any]], title: str, ylabel: str, path: Path
) -> Path | None:
    """One line per (label, points, style, color) over whole epochs; None when there is nothing to draw."""
    drawn = [line for line in lines if line[1]]
    if not drawn:
        return None
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for label, points, style, color in drawn:
        epochs, values = zip(*points, strict=True)
        ax.plot(epochs, values, style, marker="o", color=color, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _seeds_note(c: Comparison) -> str:
    return f" (mean of {len(c.seeds)} seeds)" if len(c.seeds) > 1 else ""


def loss_curves(c: Comparison, path: Path) -> Path | None:
    """Training and validation loss per epoch for every configuration on one chart."""
    colors = _colors(c)
    lines = [
        (
            f"{cell.label} {name.replace('_', ' ')}",
            c.curves.get(cell.label, {}).get(name, []),
            style,
            colors[cell.label],
        )
        for cell in c.cells
        for name, style in (("train_loss", "--"), ("val_loss", "-"))
    ]
    return _epoch_chart(lines, "Loss per epoch" + _seeds_note(c), "loss (nats)", path)


def recall_curves(c: Comparison, path: Path) -> Path | None:
    """Image-to-text recall@1 per epoch."""
    colors = _colors(c)
    lines = [
        (cell.label, c.curves.get(cell.label, {}).get("i2t_recall@1", []), "-", colors[cell.label]) for cell in c.cells
    ]
    return _epoch_chart(lines, "Retrieval per epoch" + _seeds_note(c), "image-to-text recall@1, validation (0-1)", path)


def _bars(ax: Any, c: Comparison, row: MeasureRow) -> None:
    """One bar per configuration at its mean, with the 95% interval over seeds as an error bar."""
    colors = _colors(c)
    summaries = [s for s in row.cells if s["mean"] is not None]
    means = [s["mean"] for s in summaries]
    positions = range(len(summaries))
    ax.bar(positions, means, color=[colors[s["label"]] for s in summaries])
    # Error bars only where there is an interval: a cap on a single seed's bar would draw one that is not there.
    spread = [(x, s) for x, s in zip(positions, summaries, strict=True) if s["low"] is not None]
    if spread:
        ax.errorbar([x for x, _ in spread], [s["mean"] for _, s in spread], fmt="none", ecolor="black", capsize=4,
                    yerr=[[s["mean"] - s["low"] for _, s in spread], [s["high"] - s["mean"] for _, s in spread]])
    ax.set_xticks(list(positions), [s["label"] for s in summaries], rotation=30 if len(summaries) > 3 else 0,
                  ha="right" if len(summaries) > 3 else "center", fontsize="small")  # fmt: skip
    ax.set_title(row.label, fontsize="medium")
    if any(s["high"] is not None for s in summaries):
        ax.set_ylabel("mean, bars: 95% interval over seeds", fontsize="small")


def cost_bars(c: Comparison, path: Path) -> Path | None:
    """Training time and memory per configuration."""
    rows = [c.row(m, "train") for m in ("train_time_s", "peak_gpu_mem_mb", "peak_ram_mb", "weight_memory_mb")]
    present = [row for row in rows if row is not None]
    if not present:
        return None
    fig = Figure(figsize=(3.4 * len(present), 3.8))
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, row in zip(axes, present, strict=True):
        _bars(ax, c, row)
    return _save(fig, path)


def metric_bars(c: Comparison, path: Path) -> Path | None:
    """The metric that picks the best configuration, per configuration (sweeps)."""
    row = c.row(c.metric, find_measure(c.metric).stage)
    if row is None:
        return None
    fig = Figure(figsize=(max(5.0, 1.1 * len(c.cells) + 2), 4))
    _bars(fig.subplots(), c, row)
    return _save(fig, path)


# Chart file stem -> its title on the page (the metric chart's names its metric).
CHART_TITLES = {
    "loss_curves": "Loss per epoch",
    "recall_curves": "Retrieval per epoch",
    "cost_bars": "Training cost",
}


def draw_all(c: Comparison, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {
        "metric_bars": metric_bars(c, out_dir / "metric_bars.png") if c.kind == "sweep" else None,
        "loss_curves": loss_curves(c, out_dir / "loss_curves.png"),
        "recall_curves": recall_curves(c, out_dir / "recall_curves.png"),
        "cost_bars": cost_bars(c, out_dir / "cost_bars.png"),
    }
    return {name: p for name, p in charts.items() if p is not None}
