"""The IU-Xray data stage: sources, parsing and cleaning, splits, image caches, synthetic data.

Consumers use ``load_prepared(config)``; the job system runs ``worker.data.stage.prepare_data``.
"""

from worker.data.prepared import PreparedData, SplitData, load_prepared

__all__ = ["PreparedData", "SplitData", "load_prepared"]
