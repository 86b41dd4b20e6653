"""The local backend: worker processes on this machine.

On the CPU they are forked from multiprocessing's fork server once it has loaded the run's models
(batch/shared_models.py): the workers share one copy of the weights, and starting one, or replacing one that
died, is a fork. On a GPU they are spawned and each loads its own models: CUDA does not survive a fork.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.forkserver
import os
import queue
import signal
from logging.handlers import QueueHandler

from batch import shared_models
from batch.jobs import FileJob
from batch.worker import Worker, die_with_parent, load_models, run_job, setup_process
from config import RunConfig
from gpu_memory import DevicePlan
from layout import LOG


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _worker_main(worker_id: int, workers: int, config: RunConfig, devices: DevicePlan, threads: int, tasks, events,
                 coordinator: int, sharing: str | None) -> None:
    die_with_parent()  # the main process, or the fork server, which dies with it; the job loop checks the former
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # Slurm signals the whole job: the main process stops us (SIGKILL)
    # What C libraries print (decoder notes, library banners) goes to the log file, not across the console.
    log_file = os.open(config.output / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_file, 2)
    os.close(log_file)
    setup_process(threads, QueueHandler(events))
    models = shared_models.shared(sharing) if sharing else None
    if models is None:  # workers are spread over the cards; those on one card share its memory limit
        card, per_card = devices.worker_device(worker_id, workers)
        models = load_models(config, devices, threads, device_index=card, processes_per_device=per_card)
    while True:
        try:
            job = tasks.get(timeout=5)
        except queue.Empty:
            if not _alive(coordinator):
                break
            continue
        if job is None:
            break
        report = run_job(job, config, models, worker_id, events)
        events.put(("file_done", worker_id, job.index, report))
    if not sharing:  # shared models are left as they are: freeing them would only copy their pages
        models.release()


def _stop_fork_server() -> None:
    """A fork server holds the models of the batch it was started for; the next batch of this process (a test,
    the interactive mode) may need others. multiprocessing has no public call for this."""
    stop = getattr(multiprocessing.forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()


class WorkerPool:
    """The local backend (a batch.worker.Pool): worker processes on this machine, jobs and events over
    multiprocessing queues."""

    def __init__(self, config: RunConfig, devices: DevicePlan, size: int, threads: int):
        self.config, self.devices, self.threads, self.size = config, devices, threads, size
        self.sharing = None if devices.use_gpu else shared_models.settings(config, devices, threads)
        if self.sharing:
            _stop_fork_server()
            self.context = mp.get_context("forkserver")
            self.context.set_forkserver_preload(["batch.shared_models"])
            # Read by the fork server as it starts; kept while the pool lives, so that one started again (after the
            # OOM killer took it, say) loads the models again.
            os.environ[shared_models.VARIABLE] = self.sharing
        else:
            self.context = mp.get_context("spawn")
        self.events = self.context.Queue()
        self.workers: list[Worker] = []
        try:
            for worker_id in range(size):
                self.workers.append(self._start(worker_id))
        except BaseException:  # Ctrl-C while the models load: the fork server and the workers started go too
            self.close(force=True)
            raise

    def _start(self, worker_id: int) -> Worker:
        tasks = self.context.Queue()
        process = self.context.Process(target=_worker_main, name=f"worker-{worker_id}",
                                       args=(worker_id, self.size, self.config, self.devices, self.threads, tasks,
                                             self.events, os.getpid(), self.sharing),
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
        if self.sharing:
            _stop_fork_server()
            os.environ.pop(shared_models.VARIABLE, None)
