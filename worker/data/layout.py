"""File names of the Kaggle IU-Xray layout (raddar/chest-xrays-indiana-university)."""

from __future__ import annotations

REPORTS_CSV = "indiana_reports.csv"
PROJECTIONS_CSV = "indiana_projections.csv"
IMAGES_DIR = ("images", "images_normalized")
REPORT_COLUMNS = ("uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression")
PROJECTION_COLUMNS = ("uid", "filename", "projection")
PROJECTIONS = ("Frontal", "Lateral")
