"""What every benchmark shares: machine description, timing statistics, the printed table, the JSON file.

Each script prints one table and writes ``bench/results/<name>.json`` holding the machine, the mode it
ran in (``gpu`` with the shapes the targets are set for, or ``cpu`` with smaller ones), its rows and its
target checks. A target is evaluated only where its hardware ran; elsewhere it is ``null`` with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
VERSIONED = ("torch", "transformers", "peft", "bitsandbytes", "lightning", "celery", "fastapi", "uvicorn")
MB = 2**20


def cpu_model() -> str:
    """The CPU model line from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def gpu_info() -> dict[str, Any] | None:
    """Name, memory and CUDA version of GPU 0, or None without CUDA (never imports torch if absent)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}


def machine_info(with_gpu: bool = True) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_info() if with_gpu else None,
        "platform": platform.platform(),
        "versions": package_versions(),
    }


def median_after_warmup(durations: Sequence[float], warmup: int) -> float:
    """Median of the timed durations after the first ``warmup`` (compilation, allocator growth)."""
    timed = list(durations[warmup:]) or list(durations)
    if not timed:
        raise ValueError("no durations to summarise")
    return statistics.median(timed)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def time_calls(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Wall time of ``repeats`` calls of fn, each closed by ``sync`` (CUDA work is asynchronous)."""
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        durations.append(time.perf_counter() - started)
    return durations


def check(name: str, measured: float | None, target: float | None, *, higher_is_better: bool = True,
          unit: str = "", why_skipped: str | None = None) -> dict[str, Any]:
    """One target: passed, and by how much it is missed or beaten (measured / target). With ``why_skipped``
    (e.g. a CPU run of a GPU target) or a missing value it is not evaluated: passed is None."""
    if why_skipped is not None or measured is None or target is None:
        return {"target": name, "passed": None, "measured": measured, "required": target,
                "note": why_skipped or "not measured"}
    passed = measured >= target if higher_is_better else measured <= target
    return {"target": name, "passed": passed, "measured": round(measured, 4), "required": round(target, 4),
            "ratio": round(measured / target, 3) if target else None, "unit": unit}


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def print_table(title: str, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """A rich table to stdout (plain text when not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in ("case", "model", "variant", "what") else "right")
    for row in rows:
        table.add_row(*(fmt(row.get(column)) for column in columns))
    Console(width=max(100, len(columns) * 16)).print(table)


def print_checks(checks: Sequence[dict[str, Any]]) -> None:
    for item in checks:
        if item["passed"] is None:
            status = "NOT EVALUATED"
            detail = item.get("note", "")
        else:
            status = "PASS" if item["passed"] else "MISS"
            detail = f"measured {fmt(item['measured'])} vs required {fmt(item['required'])} {item.get('unit', '')}"
        print(f"  [{status}] {item['target']}: {detail}".rstrip())


def write_results(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    """bench/results/<name>.json (or ``out``), with the machine and a UTC timestamp added."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


def parser(description: str) -> argparse.ArgumentParser:
    """The options every script takes: where the JSON goes and which device to use."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: bench/results/<name>.json).")
    return p


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: the GPU with the shapes the targets are set for when CUDA is present, else the CPU "
        "with smaller shapes.",
    )


def resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible; run on a GPU box or use --device cpu")
    return choice
