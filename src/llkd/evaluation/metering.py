"""Wall time and peak memory of a pipeline stage, measured while it runs."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import torch


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: fall back to the lifetime peak
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class StageMeter:
    """Context manager: ``seconds``, ``peak_rss_mb`` (process resident memory, sampled) and
    ``peak_gpu_mb`` (CUDA allocator peak) of the code it wraps."""

    name: str
    interval: float = 0.05
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def __enter__(self) -> "StageMeter":
        self._t0 = time.perf_counter()
        self._peak = _rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes())
        self.seconds = time.perf_counter() - self._t0
        self.peak_rss_mb = self._peak / 2**20
        if torch.cuda.is_available():
            self.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20

    def as_dict(self) -> dict[str, float | None]:
        return {"seconds": round(self.seconds, 2), "peak_rss_mb": round(self.peak_rss_mb, 1), "peak_gpu_mb": self.peak_gpu_mb}
