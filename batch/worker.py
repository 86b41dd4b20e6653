"""What every worker is, whatever runs it (a local process or a Ray actor): its set-up (threads, logging to the
main process, its models), how it runs one job, and the pool interface the batch drives."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from dataclasses import dataclass
from logging.handlers import QueueHandler
from typing import Protocol

from audio_io import printable_path
from batch.jobs import FileJob
from batch.pipeline import process_file
from config import RunConfig
from gpu_memory import DevicePlan

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies


def set_thread_variables(threads: int) -> None:
    """The native libraries' thread counts: oversubscribed threads ran 6x-150x slower here. Set before torch
    loads (a spawned worker inherits them), and again in the worker for libraries loaded later."""
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(threads)


def die_with_parent(parent: int | None = None) -> None:
    """A worker never outlives the process that started it (killed alone, by the OOM killer say) with its models
    in memory: Linux kills it when its parent dies; elsewhere the job loop checks. `parent`, when known, is the
    process that must still be there (it may have died before we asked)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def setup_process(threads: int, handler: logging.Handler) -> None:
    """What every process that runs models sets first: its thread counts and where its log records go."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the main process decides
    set_thread_variables(threads)
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    logger = logging.getLogger("audio_processing")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logging.captureWarnings(True)  # library warnings go to the log file, not across the progress bars
    logging.getLogger("py.warnings").handlers[:] = [handler]
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # set already, in the loader this worker was forked from
        pass


def worker_models(config: RunConfig, devices: DevicePlan, threads: int, events, device_index: int,
                  processes_per_device: int):
    """A worker's set-up, whatever runs it: thread counts, logging to the main process, its models."""
    setup_process(threads, QueueHandler(events))
    return load_models(config, devices, threads, device_index, processes_per_device)


def load_models(config: RunConfig, devices: DevicePlan, threads: int, device_index: int, processes_per_device: int):
    """The worker's ModelManager; each model loads when a stage first asks for it (or in Stage.preload)."""
    from gpu_memory import GPUMemoryManager
    from model_manager import ModelManager

    gpu = GPUMemoryManager(devices.memory_limit, use_gpu=devices.use_gpu, device_index=device_index,
                           processes_per_device=processes_per_device)
    return ModelManager(gpu, models_dir=config.models_dir, hf_token=config.hf_token, cpu_threads=threads,
                        language=config.language, asr_compute_type=config.asr_compute_type)


def run_job(job: FileJob, config: RunConfig, models, worker_id: int, events) -> dict:
    """One file in a worker: its events go to the main process as they happen."""
    def emit(kind: str, payload: dict) -> None:
        events.put((kind, worker_id, job.index, payload))

    emit("file_started", {})
    return process_file(job, config, models, emit)


@dataclass
class Worker:
    id: int
    process: object  # a multiprocessing.Process, or a Ray actor
    tasks: object  # its job queue, or the Ray result of its current job
    job: FileJob | None = None
    started: float | None = None  # when the worker began the job (it may still be starting up)
    error: str | None = None  # set by a pool that learns its job cannot finish


def failed_report(job: FileJob, error: str, seconds: float) -> dict:
    return {"source": printable_path(job.source), "output": job.key, "status": "failed", "error": error,
            "duration": 0.0, "parts": 0, "stages": {}, "notes": [], "processing_seconds": round(seconds, 3)}


class Pool(Protocol):
    """What the batch needs of a backend (batch.local_pool.WorkerPool, batch.ray_pool.RayWorkerPool)."""

    workers: list[Worker]

    def assign(self, worker: Worker, job: FileJob) -> None:
        """Give an idle worker a job."""

    def next_event(self, timeout: float):
        """A log record or an event (kind, worker id, job index, payload) from a worker; None after timeout."""

    def failure(self, worker: Worker) -> str | None:
        """Why a busy worker can no longer finish its job, or None while it can."""

    def replace(self, worker: Worker) -> None:
        """A fresh worker in place of one that died or ran past the timeout."""

    def close(self, force: bool = False) -> None:
        """Stop every worker: after their jobs, or at once."""
