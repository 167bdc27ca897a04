"""Markdown tables of the JSON files in bench/results, for RESULTS.md.

Run: python -m bench.summary [bench/results/train_step.json ...]   (default: every results file)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, fmt, parser

COLUMNS = {
    "train_step": ["model", "variant", "batch", "step_ms", "samples_per_s", "peak_alloc_mb", "peak_reserved_mb",
                   "weight_mb", "trainable_params"],
    "data": ["what", "batch", "workers", "images", "seconds", "images_per_s"],
    "data_scale": ["images", "kept", "prepare_s", "prepare_us_per_image", "prepared_mb", "prepare_anon_mb",
                   "prepare_hwm_mb", "prepare_tree_anon_mb", "loader_images_per_s", "loader_anon_mb", "train_s",
                   "train_anon_mb", "train_hwm_mb"],
    "reader_scale": ["source", "rows", "kept", "prepare_s", "prepare_us_per_row", "prepare_anon_mb", "prepare_hwm_mb"],
    "generate": ["what", "batch", "studies", "seconds", "reports_per_s", "tokens_per_report"],
    "fits": ["model", "method", "cap_gb", "preset_batch", "fits", "peak_alloc_mb", "step_ms", "largest_batch"],
}


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def queue_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for backend in result["backends"]:
        latency, load, drained = (backend.get(k, {}) for k in ("start_latency", "submit_load", "drain"))
        rows.append({"backend": f"{backend['backend']} ({backend.get('database')})",
                     "start p50 s": latency.get("p50_s"), "start max s": latency.get("max_s"),
                     "POST p50 ms": load.get("p50_ms"), "POST p99 ms": load.get("p99_ms"),
                     "POSTs/s": load.get("requests_per_s"), "POST errors": _errors(load),
                     "drained": drained.get("succeeded"), "of": drained.get("jobs"),
                     "ran twice": drained.get("ran_more_than_once"), "jobs/s": drained.get("jobs_per_s"),
                     "failed phases": ", ".join(k for k in ("start_latency", "submit_load", "drain")
                                                if "error" in backend.get(k, {})) or None})
    return rows


def _errors(load: dict[str, Any]) -> int | None:
    if "outcomes" not in load:
        return None
    return sum(n for code, n in load["outcomes"].items() if code != "202")


def summarize(path: Path) -> str:
    result = json.loads(path.read_text())
    name = result["benchmark"]
    machine = result["machine"]
    gpu = machine.get("gpu") or {}
    head = (f"### {path.name} ({result.get('mode', '?')} mode, {result['measured_at']}; {machine['cpu']}, "
            f"{machine['cores']} cores, GPU {gpu.get('name', 'none')})")
    rows = queue_rows(result) if name == "queue" else result.get("rows", [])
    columns = COLUMNS.get(name) or (list(rows[0]) if rows else [])
    table = markdown_table(rows, columns) if rows else "(no rows" + (": skipped)" if result.get("skipped") else ")")
    checks = "\n".join(f"- {_status(c)} {c['target']}" + _detail(c) for c in result.get("targets", []))
    return "\n\n".join(part for part in (head, table, checks) if part)


def _status(item: dict[str, Any]) -> str:
    return {True: "PASS", False: "MISS", None: "not evaluated"}[item["passed"]] + ":"


def _detail(item: dict[str, Any]) -> str:
    if item["passed"] is None:
        return f" ({item.get('note', '')})"
    return f" (measured {fmt(item['measured'])}, required {fmt(item['required'])} {item.get('unit', '')})".rstrip()


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="Results files (default: all in bench/results).")
    args = p.parse_args(argv)
    files = args.files or sorted(RESULTS_DIR.glob("*.json"))
    text = "\n\n".join(summarize(path) for path in files) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
