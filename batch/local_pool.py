"""The local backend: worker processes started with the spawn method, each loading its models once."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal

from batch.jobs import FileJob
from batch.worker import Worker, run_job, worker_models
from config import RunConfig
from gpu_memory import DevicePlan
from layout import LOG

PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies


def _die_with_parent(parent: int) -> None:
    """A worker never outlives the main process (killed alone, by the OOM killer say) with its models in memory:
    Linux kills it when its parent dies; elsewhere the job loop checks."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)


def _worker_main(worker_id: int, workers: int, config: RunConfig, devices: DevicePlan, threads: int, tasks, events,
                 parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # Slurm signals the whole job: the main process stops us (SIGKILL)
    # What C libraries print (decoder notes, library banners) goes to the log file, not across the console.
    log_file = os.open(config.output / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_file, 2)
    os.close(log_file)
    # Workers are spread over the cards; those on one card share its memory limit.
    card, sharing = devices.worker_device(worker_id, workers)
    models = worker_models(config, devices, threads, events, device_index=card, processes_per_device=sharing)
    while True:
        try:
            job = tasks.get(timeout=5)
        except queue.Empty:
            if os.getppid() != parent:
                break
            continue
        if job is None:
            break
        report = run_job(job, config, models, worker_id, events)
        events.put(("file_done", worker_id, job.index, report))
    models.release()


class WorkerPool:
    """The local backend (a batch.worker.Pool): worker processes on this machine, jobs and events over
    multiprocessing queues."""

    def __init__(self, config: RunConfig, devices: DevicePlan, size: int, threads: int):
        self.context = mp.get_context("spawn")
        self.config, self.devices, self.threads, self.size = config, devices, threads, size
        self.events = self.context.Queue()
        self.workers = [self._start(i) for i in range(size)]

    def _start(self, worker_id: int) -> Worker:
        tasks = self.context.Queue()
        process = self.context.Process(target=_worker_main, name=f"worker-{worker_id}",
                                       args=(worker_id, self.size, self.config, self.devices, self.threads, tasks,
                                             self.events, os.getpid()),
                                       daemon=True)
        process.start()
        return Worker(worker_id, process, tasks)

    def next_event(self, timeout: float):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def failure(self, worker: Worker) -> str | None:
        if worker.process.is_alive():
            return None
        return f"worker process died (exit code {worker.process.exitcode})"

    def replace(self, worker: Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        self.workers[worker.id] = self._start(worker.id)

    def assign(self, worker: Worker, job: FileJob) -> None:
        worker.job, worker.started, worker.error = job, None, None
        worker.tasks.put(job)

    def close(self, force: bool = False) -> None:
        for worker in self.workers:
            if force:
                worker.process.kill()
            else:
                worker.tasks.put(None)
        for worker in self.workers:
            worker.process.join(5 if force else 60)
            if worker.process.is_alive():
                worker.process.kill()
