"""Peak memory while a block runs: process RSS (sampled with psutil) and CUDA allocator peaks."""

from __future__ import annotations

import os
import threading
from types import TracebackType

import psutil
import torch

MB = 2**20


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.metrics()``: peak_ram_mb, peak_gpu_mem_mb,
    peak_gpu_reserved_mb (the GPU values are None without CUDA)."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self._process = psutil.Process()
        self._peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)

    def _sample(self) -> None:
        while True:
            self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats(_rank_device())
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)

    def metrics(self) -> dict[str, float | None]:
        """Peaks so far (also valid while the block still runs)."""
        cuda = torch.cuda.is_available()
        return {
            "peak_ram_mb": max(self._peak_rss, self._process.memory_info().rss) / MB,
            "peak_gpu_mem_mb": torch.cuda.max_memory_allocated(_rank_device()) / MB if cuda else None,
            "peak_gpu_reserved_mb": torch.cuda.max_memory_reserved(_rank_device()) / MB if cuda else None,
        }


def _rank_device() -> int:
    """The GPU this process trains on. The stats are read before Lightning sets the device; without an index
    every extra DDP rank would open a CUDA context on GPU 0 (LOCAL_RANK is set by the launcher of the ranks)."""
    return int(os.environ.get("LOCAL_RANK", "0"))
