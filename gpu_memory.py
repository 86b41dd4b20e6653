"""Where a run computes, and the GPU memory it may use.

The main process decides once (`plan_devices`: --use_gpu, the profile and the cards it finds) and hands the
`DevicePlan` to every worker, local or Ray. In a worker, `GPUMemoryManager` holds the card's memory limit,
checks what is free, cleans up, and falls back to the CPU on out-of-memory. Everything CUDA goes through
`self.cuda`, which is `torch.cuda` unless a test passes a stand-in with the same functions, so the code that
runs under test is the code that runs on a real card. The main process never imports torch: it finds the cards
through the CUDA driver itself.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

GB = 1024 ** 3
DEFAULT_MEMORY_LIMIT = 0.75
T = TypeVar("T")

log = logging.getLogger("audio_processing")


def is_out_of_memory(error: BaseException) -> bool:
    """torch raises OutOfMemoryError; CTranslate2 and others raise RuntimeError('... out of memory ...')."""
    torch = sys.modules.get("torch")  # not imported: the error cannot be torch's (the main process never imports it)
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, (RuntimeError, MemoryError)) and "out of memory" in str(error).lower()


def usable_cores() -> int:
    """The CPU cores this process may run on (taskset, cgroup cpusets and containers narrow them): workers and
    their threads are counted against these, never against the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Card:
    name: str
    memory_gb: float


def detect_gpus() -> list[Card]:
    """The CUDA devices this process may use (CUDA_VISIBLE_DEVICES applies), asked of the driver (libcuda)
    without torch; none when there is no driver."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return []
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    cards = []
    for index in range(count.value):
        device, name, memory = ctypes.c_int(0), ctypes.create_string_buffer(256), ctypes.c_size_t(0)
        if (driver.cuDeviceGet(ctypes.byref(device), index) == 0
                and driver.cuDeviceGetName(name, len(name), device) == 0
                and driver.cuDeviceTotalMem_v2(ctypes.byref(memory), device) == 0):
            cards.append(Card(name.value.decode(errors="replace"), memory.value / GB))
    return cards


@dataclass(frozen=True)
class DevicePlan:
    """Where the workers compute; decided once in the main process, the same for every worker."""

    use_gpu: bool
    memory_limit: float = DEFAULT_MEMORY_LIMIT
    cards: int = 0  # CUDA devices on this machine; 0 on the CPU (and for Ray, whose cluster places the GPUs)
    description: str = ""  # one line for the log

    def worker_device(self, worker_id: int, workers: int) -> tuple[int, int]:
        """(card index, workers sharing that card): workers are spread over the cards."""
        if not self.use_gpu or self.cards <= 1:
            return 0, max(1, workers) if self.use_gpu else 1
        return worker_id % self.cards, -(-workers // self.cards)


def plan_devices(use_gpu: bool, memory_limit: float, backend: str = "local",
                 cards: list[Card] | None = None) -> DevicePlan:
    """The run's device plan from --use_gpu (after the profile), --gpu_memory_limit and the cards found here."""
    if not use_gpu:
        return DevicePlan(False, description="devices: CPU (--use_gpu not given)")
    if backend == "ray":
        return DevicePlan(True, memory_limit, description=f"devices: the Ray cluster's GPUs, memory limit "
                                                          f"{memory_limit:.0%} of each card")
    cards = detect_gpus() if cards is None else cards
    if not cards:
        return DevicePlan(False, description="devices: CPU (--use_gpu given, but no CUDA device was found)")
    if memory_limit <= 0:
        return DevicePlan(False, description="devices: CPU (--gpu_memory_limit 0 leaves the GPU nothing)")
    names = ", ".join(f"{card.name} ({card.memory_gb:.0f} GB)" for card in cards)
    return DevicePlan(True, memory_limit, len(cards), f"devices: {len(cards)} GPU(s): {names}; memory limit "
                                                      f"{memory_limit:.0%} of each card")


class GPUMemoryManager:
    def __init__(self, memory_limit: float = DEFAULT_MEMORY_LIMIT, *, use_gpu: bool, cuda=None,
                 device_index: int = 0, processes_per_device: int = 1):
        if not 0.0 <= memory_limit <= 1.0:
            raise ValueError(f"memory_limit must be between 0 and 1, got {memory_limit}")
        if cuda is None and use_gpu:
            import torch  # here, not at the top: the main process imports this module and needs no torch (~400 MB)

            cuda = torch.cuda
        self.cuda = cuda  # None on the CPU: nothing CUDA is asked
        self.memory_limit = memory_limit
        self.device_index = device_index
        # Workers that share one card share its limit: each process gets its slice.
        self.process_fraction = memory_limit / max(1, processes_per_device)
        self.lock = threading.RLock()  # one GPU job at a time inside a process
        self.enabled = bool(use_gpu and memory_limit > 0 and self.cuda.is_available())
        if self.enabled:
            self.cuda.set_per_process_memory_fraction(self.process_fraction, device_index)

    @property
    def device(self) -> str:
        """Where models and tensors go. A test's fake CUDA layer may name another device to place them on
        (`tensor_device`), so that everything else runs exactly as it does with a card."""
        if not self.enabled:
            return "cpu"
        return getattr(self.cuda, "tensor_device", None) or f"cuda:{self.device_index}"

    @property
    def device_label(self) -> str:
        """The device as reports name it."""
        return f"cuda:{self.device_index}" if self.enabled else "cpu"

    def memory_info(self) -> tuple[float, float]:
        """(used, total) in GB for the whole card; (0, 0) without a GPU."""
        if not self.enabled:
            return 0.0, 0.0
        free, total = self.cuda.mem_get_info(self.device_index)
        return (total - free) / GB, total / GB

    def memory_line(self) -> str:
        used, total = self.memory_info()
        percent = 100.0 * used / total if total else 0.0
        return f"GPU Memory: {used:.2f}GB / {total:.2f}GB ({percent:.1f}%)"

    def log_memory(self) -> None:
        if self.enabled:
            log.info(self.memory_line())

    def free_gb(self) -> float:
        """What this process may still take: the smaller of the card's free memory and our slice's headroom."""
        if not self.enabled:
            return 0.0
        free, total = self.cuda.mem_get_info(self.device_index)
        headroom = total * self.process_fraction - self.cuda.memory_reserved(self.device_index)
        return max(0.0, min(free, headroom)) / GB

    def check_memory(self, required_gb: float = 2.0) -> bool:
        return self.enabled and self.free_gb() >= required_gb

    def choose_device(self, required_gb: float = 2.0) -> str:
        """The GPU when enabled and enough memory is free (after a cleanup if needed), else the CPU."""
        return self.device if self._gpu_has_room(required_gb) else "cpu"

    def _gpu_has_room(self, required_gb: float) -> bool:
        if not self.enabled:
            return False
        if not self.check_memory(required_gb):
            self.cleanup()
        return self.check_memory(required_gb)

    def cleanup(self, force: bool = False) -> None:
        gc.collect()
        if not self.enabled:
            return
        with self.lock:
            if force:
                self.cuda.synchronize(self.device_index)
                self.cuda.ipc_collect()
            self.cuda.empty_cache()

    def run_with_fallback(self, work: Callable[[str, bool], T], what: str, required_gb: float = 2.0,
                          on_fallback: Callable[[str], None] | None = None) -> T:
        """work(device, reduced) on the GPU when there is room; on out-of-memory, clean up and try once more on
        the GPU with reduced=True (smaller batches), then on the CPU. Other errors are raised as they are."""
        if not self._gpu_has_room(required_gb):
            return work("cpu", False)
        for reduced in (False, True):
            try:
                with self.lock:
                    return work(self.device, reduced)
            except Exception as error:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(error):
                    raise
            self.cleanup(force=True)
        message = f"{what}: GPU out of memory (also with smaller batches), ran on the CPU instead"
        log.warning(message)
        if on_fallback:
            on_fallback(message)
        return work("cpu", False)
