"""A stand-in for torch.cuda with the same functions: memory figures and out-of-memory errors on demand.

No GPU is lent to this project; this is what lets the GPU code paths (limits, checks, cleanup, CPU fallback)
run under test exactly as they run on a card.
"""

from __future__ import annotations

import torch

GB = 1024 ** 3


class FakeCuda:
    def __init__(self, total_gb: float = 8.0, used_gb: float = 0.0, devices: int = 1,
                 tensor_device: str | None = None):
        # tensor_device="cpu": models and tensors stay on the CPU while the manager runs its GPU code paths
        self.tensor_device = tensor_device
        self.total = int(total_gb * GB)
        self.used = int(used_gb * GB)
        self.devices = devices
        self.fractions: dict[int, float] = {}
        self.calls: list[str] = []
        self.reserved = 0

    # the torch.cuda functions the project uses
    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.devices

    def get_device_name(self, device: int = 0) -> str:
        return "Fake GPU"

    def set_per_process_memory_fraction(self, fraction: float, device: int = 0) -> None:
        self.fractions[device] = fraction

    def mem_get_info(self, device: int = 0) -> tuple[int, int]:
        return self.total - self.used, self.total

    def memory_reserved(self, device: int = 0) -> int:
        return self.reserved

    def empty_cache(self) -> None:
        self.calls.append("empty_cache")
        self.reserved = 0

    def synchronize(self, device: int = 0) -> None:
        self.calls.append("synchronize")

    def ipc_collect(self) -> None:
        self.calls.append("ipc_collect")


def fail_first(count: int, function, kind: str = "torch"):
    """function, except that its first `count` calls raise the out-of-memory error of a full card."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= count:
            raise out_of_memory(kind)
        return function(*args, **kwargs)

    wrapper.calls = calls
    return wrapper


def out_of_memory(kind: str = "torch") -> Exception:
    """The errors real libraries raise when the card is full."""
    if kind == "torch":
        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return RuntimeError("CUDA failed with error out of memory")  # CTranslate2's wording
