"""The Lightning training machinery both models share: SigLIP's `train` and report generation's `train-full`.

Modules, one concern each:
- ``trainer``     ``build_trainer`` (checkpoints, early stopping, LR monitoring, loggers, per-epoch reporting),
                  resume, the best epoch's metrics and the fit's StageResult
- ``callbacks``   recorder progress/metrics/cancellation, the best checkpoint, throughput
- ``atomic_io``   checkpoint files that are either whole or absent
- ``profiling``   peak RAM and GPU memory
- ``schedule``    the LR schedule (transformers' linear warmup, then cosine decay)
- ``device``      accelerator, precision, this process's device and the frozen weights' dtype
- ``runs``        run folders keyed by a checkpoint

Nothing here knows a model, and nothing here imports the packages above it (siglip, generation, export).
Import the submodules directly; importing this package pulls in nothing heavy.
"""
