"""Comparison and sweep reports, built from experiment and metric rows (plain dicts).

The job system reads the rows from the database and hands them to `worker.report.stage.build_report`;
nothing in this package remembers a run, so a report can be rebuilt at any time from SQL alone. The package
imports nothing itself, so that `worker.report.metrics` (the measures) stays cheap to import for validation.
"""
