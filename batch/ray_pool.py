"""The Ray backend (--backend ray): the same workers as the local pool, as Ray actors on a cluster.

Each actor is one worker: it sets its threads, loads its models once and runs files with the same code as a local
worker process. Its events (log records, finished parts) come back over a Ray queue, so the main process writes
the manifest, the log and the reports exactly as with the local backend. Inputs and outputs must be on a path
every node sees (NFS or similar). An actor that dies is restarted by Ray and its file retried once; after that
the file is reported as failed and a fresh actor takes its place.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import deque
from pathlib import Path

from config import RunConfig
from gpu_memory import DevicePlan, usable_cores
from batch.jobs import FileJob
from batch.worker import Worker, run_job, worker_models

log = logging.getLogger("audio_processing")
ROOT = Path(__file__).resolve().parent.parent  # the project, on every node's PYTHONPATH
class FileWorker:
    """A Ray actor holding one worker's models for all the files it is given."""

    def __init__(self, config: RunConfig, devices: DevicePlan, threads: int, processes_per_device: int):
        # Only small arguments here: Ray can restart an actor whose constructor arguments are inlined.
        self.config, self.devices, self.threads = config, devices, threads
        self.processes_per_device = processes_per_device
        self.models = None

    def process(self, job: FileJob, worker_id: int, events) -> dict:
        multiprocessing.current_process().name = f"ray-worker-{worker_id}"  # as log records name their worker
        if self.models is None:  # Ray shows the actor the GPU it was given as device 0 (CUDA_VISIBLE_DEVICES)
            self.models = worker_models(self.config, self.devices, self.threads, events, device_index=0,
                                        processes_per_device=self.processes_per_device)
        return run_job(job, self.config, self.models, worker_id, events)


class RayWorkerPool:
    """Actors instead of processes; what BatchRun needs from a pool (see runner.WorkerPool)."""

    def __init__(self, config: RunConfig, devices: DevicePlan, size: int, threads: int):
        import ray  # optional: the command line checked it is installed

        self.ray = ray
        from ray.util.queue import Queue

        self.started_ray = not ray.is_initialized()
        ray_log = logging.getLogger("ray")  # Ray's own notes go to our log file, not across the progress bars
        ray_log.propagate = False
        ray_log.handlers[:] = [handler for handler in log.handlers if isinstance(handler, logging.FileHandler)]
        if self.started_ray:
            # No address: a Ray instance on this machine. Actor output goes to Ray's own log files, not across
            # the progress bars; our log records come over the queue.
            # The project's code must be at the same path on every node (a shared folder, like the data).
            paths = [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
            environment = {"PYTHONPATH": os.pathsep.join(paths), "PYANNOTE_METRICS_ENABLED": "0"}
            ray.init(address=config.ray_address, log_to_driver=False, include_dashboard=False,
                     configure_logging=False, runtime_env={"env_vars": environment},
                     # every actor must fit, as every local worker starts even with more workers than cores
                     **({} if config.ray_address else {"num_cpus": max(usable_cores(), size * threads)}))
        if config.ray_address:  # threads per actor from the cluster's cores, not this machine's
            threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // size)
        self.config, self.devices, self.size, self.threads = config, devices, size, threads
        self.events = Queue()
        self.waiting: deque = deque()
        gpus = 0.0
        if devices.use_gpu:
            cards = ray.cluster_resources().get("GPU", 0)
            gpus = min(1.0, cards / size) if cards else 0.0  # workers share the cards evenly
        self.gpus = gpus
        self.actor_class = ray.remote(num_cpus=threads, num_gpus=gpus, max_restarts=1,
                                      max_task_retries=1)(FileWorker)
        self.workers = [self._start(i) for i in range(size)]

    def _start(self, worker_id: int) -> Worker:
        per_device = max(1, round(1 / self.gpus)) if self.gpus else 1
        actor = self.actor_class.remote(self.config, self.devices, self.threads, per_device)
        return Worker(worker_id, actor, None)

    def assign(self, worker: Worker, job: FileJob) -> None:
        worker.job, worker.started, worker.error = job, None, None
        worker.tasks = worker.process.process.remote(job, worker.id, self.events)

    def next_event(self, timeout: float):
        """A queued event; else a finished file, as a file_done event once all its events are in."""
        if not self.waiting:
            self.waiting.extend(self._queued())
        if not self.waiting:
            running = {worker.tasks: worker for worker in self.workers if worker.job is not None}
            done, _ = self.ray.wait(list(running), num_returns=1, timeout=timeout) if running else ([], [])
            if not running:
                time.sleep(timeout)
            for ref in done:
                worker = running[ref]
                self.waiting.extend(self._queued())  # what the file sent before it returned comes first
                try:
                    report = self.ray.get(ref)
                except Exception as error:  # noqa: BLE001 - the actor died twice, or the task raised
                    worker.error = f"Ray worker failed ({type(error).__name__}: {str(error).splitlines()[0]})"
                    continue
                self.waiting.append(("file_done", worker.id, worker.job.index, report))
        return self.waiting.popleft() if self.waiting else None

    def _queued(self) -> list:
        size = self.events.qsize()
        return self.events.get_nowait_batch(size) if size else []

    def failure(self, worker: Worker) -> str | None:
        return worker.error

    def replace(self, worker: Worker) -> None:
        self.ray.kill(worker.process, no_restart=True)
        self.workers[worker.id] = self._start(worker.id)

    def close(self, force: bool = False) -> None:
        for worker in self.workers:
            if force or worker.job is None:
                self.ray.kill(worker.process, no_restart=True)
        if self.started_ray:
            self.ray.shutdown()
