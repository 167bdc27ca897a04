"""The report's charts as PNG files.

Uses matplotlib's object API (Figure) rather than pyplot: no global state and no GUI backend, so charts
render the same in a worker process, a test, or a headless server."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from worker.report.compare import METHODS, Comparison

COLORS = {"lora": "#1f77b4", "qlora": "#d62728"}


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _epoch_chart(
    lines: list[tuple[str, list[tuple[int, float]], str, str]], title: str, ylabel: str, path: Path
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
    ax.legend()
    return _save(fig, path)


def loss_curves(c: Comparison, path: Path) -> Path | None:
    """Training and validation loss per epoch for both methods on one chart."""
    lines = [
        (f"{method} {name}", c.curves.get(method, {}).get(name, []), style, COLORS[method])
        for method in METHODS
        for name, style in (("train_loss", "--"), ("val_loss", "-"))
    ]
    return _epoch_chart(lines, "Loss per epoch", "loss", path)


def recall_curves(c: Comparison, path: Path) -> Path | None:
    """Image-to-text recall@1 per epoch."""
    lines = [(method, c.curves.get(method, {}).get("i2t_recall@1", []), "-", COLORS[method]) for method in METHODS]
    return _epoch_chart(lines, "Retrieval per epoch", "image-to-text recall@1 (val)", path)


def cost_bars(c: Comparison, path: Path) -> Path | None:
    """Bars for training time and memory, one pair per measure."""
    measures = [
        ("train_time_s", "time (s)"),
        ("peak_gpu_mem_mb", "peak GPU (MB)"),
        ("peak_ram_mb", "peak RAM (MB)"),
        ("weight_memory_mb", "weights (MB)"),
    ]
    present = [(m, label) for m, label in measures if any(c.value(x, "train", m) is not None for x in METHODS)]
    if not present:
        return None
    fig = Figure(figsize=(3 * len(present), 3.5))
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, (metric, label) in zip(axes, present, strict=True):
        values = [c.value(m, "train", metric) or 0.0 for m in METHODS]
        ax.bar(METHODS, values, color=[COLORS[m] for m in METHODS])
        ax.set_title(label)
    return _save(fig, path)


def draw_all(c: Comparison, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {
        "loss_curves": loss_curves(c, out_dir / "loss_curves.png"),
        "recall_curves": recall_curves(c, out_dir / "recall_curves.png"),
        "cost_bars": cost_bars(c, out_dir / "cost_bars.png"),
    }
    return {name: p for name, p in charts.items() if p is not None}
