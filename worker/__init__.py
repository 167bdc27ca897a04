"""The ML stages. Knows nothing of Celery, HTTP or SQL: a stage takes a config and a recorder.

Keep this package's import torch-free: heavy modules are imported by the stage functions that need them.
"""
