"""Hardware profiles: the seed guide's tuning table as presets (memory limit, batch size, workers).

`--profile auto` picks one from the detected hardware; flags given explicitly override the profile.
"""

from __future__ import annotations

import os

import psutil

PROFILES = {
    # name: (GPU memory limit, denoise batch size, worker processes); the seed guide's table
    "high": (0.8, 4, 8),  # e.g. RTX 5080, 32 GB RAM
    "mid": (0.6, 2, 4),  # e.g. RTX 3060, 16 GB RAM
    "low": (0.0, 1, 2),  # CPU only, 8 GB RAM
    "cpu": (0.0, 2, None),  # CPU only with more RAM: workers from get_optimal_workers
}


def detect_profile(cuda=None, memory_gb: float | None = None) -> str:
    if cuda is None:
        import torch

        cuda = torch.cuda
    memory_gb = memory_gb if memory_gb is not None else psutil.virtual_memory().total / 1024 ** 3
    if cuda.is_available():
        card_gb = cuda.mem_get_info(0)[1] / 1024 ** 3
        return "high" if card_gb >= 12 and memory_gb >= 32 else "mid"
    return "low" if memory_gb < 12 else "cpu"


def profile_settings(name: str, cuda=None) -> dict:
    """The profile's settings; workers never more than the cores (threads are split between them)."""
    if name == "auto":
        name = detect_profile(cuda)
    limit, batch_size, workers = PROFILES[name]
    if workers is not None:
        workers = min(workers, os.cpu_count() or 1)
    return {"profile": name, "gpu_memory_limit": limit, "batch_size": batch_size, "workers": workers}
