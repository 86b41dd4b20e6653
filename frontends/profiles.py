"""Hardware profiles: the seed guide's tuning table as presets (GPU use, memory limit, batch size, workers).

`--profile auto` picks one from the detected hardware. A profile only fills the options the user did not give
(config.make_config logs where a given option kept its value over the profile's).
"""

from __future__ import annotations


import psutil

from gpu_memory import Card, detect_gpus, usable_cores

PROFILES = {
    # name: (use the GPU, GPU memory limit, denoise batch size, worker processes); the seed guide's table
    "high": (True, 0.8, 4, 8),  # e.g. RTX 5080, 32 GB RAM
    "mid": (True, 0.6, 2, 4),  # e.g. RTX 3060, 16 GB RAM
    "low": (False, None, 1, 2),  # CPU only, 8 GB RAM
    "cpu": (False, None, 2, None),  # CPU only with more RAM: workers from get_optimal_workers
}


def detect_profile(cards: list[Card] | None = None, memory_gb: float | None = None) -> str:
    cards = detect_gpus() if cards is None else cards
    memory_gb = memory_gb if memory_gb is not None else psutil.virtual_memory().total / 1024 ** 3
    if cards:
        return "high" if cards[0].memory_gb >= 12 and memory_gb >= 32 else "mid"
    return "low" if memory_gb < 12 else "cpu"


def profile_settings(name: str, cards: list[Card] | None = None) -> tuple[str, dict]:
    """(the profile's name, auto resolved; the option values it sets). Workers never more than the cores."""
    if name == "auto":
        name = detect_profile(cards)
    use_gpu, limit, batch_size, workers = PROFILES[name]
    settings = {"use_gpu": use_gpu, "gpu_memory_limit": limit, "batch_size": batch_size,
                "workers": None if workers is None else min(workers, usable_cores())}
    return name, {option: value for option, value in settings.items() if value is not None}
