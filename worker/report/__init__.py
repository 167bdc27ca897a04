"""The LoRA-versus-QLoRA comparison report, built from experiment and metric rows (plain dicts).

The job system reads the rows from the database and hands them here; nothing in this package
remembers a run, so a report can be rebuilt at any time from SQL alone.
"""

from worker.report.compare import Comparison, compare_methods
from worker.report.stage import build_report

__all__ = ["Comparison", "build_report", "compare_methods"]
