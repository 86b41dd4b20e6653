"""The batch: files shared out to worker processes, progress, the log, the manifest and the summary.

Workers are started with the spawn method and each loads its models once. The main process is the only writer
of the manifest and the log; workers send it events (log records, finished parts, finished files) over one
queue. A worker that exceeds --timeout or dies is replaced, and its file is reported as failed.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import queue
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from logging.handlers import QueueHandler
from pathlib import Path

import psutil
from tqdm import tqdm

from config import RunConfig
from gpu_memory import DevicePlan
from html_report import write_html_report
from pipeline import FileJob, process_file, remove_leftovers, shard_jobs
from audio_io import write_json
from model_store import disable_downloads_when_offline
from resume import (clear_outputs, finished_reports, fully_reused, prepare_redo, read_manifest, reusable_parts,
                    rewrite_manifest, stage_fingerprints)
from reports import append_manifest, statistics_block, summarize

log = logging.getLogger("audio_processing")
PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies
LOG_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(message)s"


def get_optimal_workers() -> int:
    """The seed guide's rule: half the cores, fewer when RAM is short."""
    cpu_count = mp.cpu_count()
    memory_gb = psutil.virtual_memory().total / 1024 ** 3
    if cpu_count >= 12 and memory_gb >= 24:
        return min(6, cpu_count // 2)
    if cpu_count >= 8 and memory_gb >= 16:
        return min(4, cpu_count // 2)
    return max(1, min(2, cpu_count // 2))


def threads_per_worker(workers: int) -> int:
    """Workers x threads ~ cores: oversubscribed torch threads ran 6x-150x slower here."""
    return max(1, (os.cpu_count() or 1) // workers)


# ---- inside a worker process ----

def worker_models(config: RunConfig, devices: DevicePlan, threads: int, events, device_index: int,
                  processes_per_device: int):
    """A worker's set-up, whatever runs it: thread counts, logging to the main process, its models."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the main process decides
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(threads)
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    logger = logging.getLogger("audio_processing")
    logger.handlers[:] = [QueueHandler(events)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logging.captureWarnings(True)  # library warnings go to the log file, not across the progress bars
    logging.getLogger("py.warnings").handlers[:] = [QueueHandler(events)]
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
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
    # What C libraries print (decoder notes, library banners) goes to the log file, not across the console.
    log_file = os.open(config.output / "audio_processing.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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


# ---- in the main process ----

@dataclass
class Worker:
    id: int
    process: object  # a multiprocessing.Process, or a Ray actor
    tasks: object  # its job queue, or the Ray result of its current job
    job: FileJob | None = None
    started: float | None = None  # when the worker began the job (it may still be starting up)
    error: str | None = None  # set by a pool that learns its job cannot finish


def _failed_report(job: FileJob, error: str, seconds: float) -> dict:
    return {"source": str(job.source), "output": job.key, "status": "failed", "error": error, "duration": 0.0,
            "parts": 0, "stages": {}, "notes": [], "processing_seconds": round(seconds, 3)}


class WorkerPool:
    """The local backend: worker processes on this machine, jobs and events over multiprocessing queues.

    A pool (this one, or ray_backend.RayWorkerPool) gives BatchRun: workers, next_event, assign, failure,
    replace and close."""

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
        """Why a busy worker can no longer finish its job, or None while it can."""
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


class BatchRun:
    """The main process's side of a batch: hands out jobs, records events, replaces stuck workers."""

    def __init__(self, config: RunConfig, devices: DevicePlan, jobs: list[FileJob], workers: int, quiet: bool):
        self.config, self.devices, self.jobs = config, devices, jobs
        self.pending = list(shard_jobs(config, jobs, workers))  # long files' parts shared out when files are few
        self.shards_left = Counter(job.index for job in self.pending if job.shard)
        self.carried: dict[int, dict] = {}  # file -> what its finished shards spent
        self.workers = max(1, min(workers, len(self.pending)))
        self.threads = threads_per_worker(self.workers)
        self.manifest = config.output / "manifest.jsonl"
        self.reports: dict[int, dict] = {}
        bars = {"disable": True} if quiet else {"disable": None}  # None: shown on a terminal only
        self.files_bar = tqdm(total=len(jobs), desc="files", unit="file", position=0, **bars)
        self.parts_bar = tqdm(desc="parts", unit="part", position=1, **bars)
        self.activity: dict[int, str] = {}  # worker -> what it is doing, shown beside the parts bar
        self.recorded: set[tuple[str, int]] = set()  # parts in the manifest; a retried file's parts are not again

    def run(self) -> bool:
        """True when the run was interrupted (Ctrl-C)."""
        log.info("processing %d file(s) with %d worker(s), %d thread(s) each%s", len(self.jobs), self.workers,
                 self.threads, f"; {len(self.shards_left)} long file(s) shared out in {sum(self.shards_left.values())}"
                 " shards" if self.shards_left else "")
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[variable] = str(self.threads)  # inherited by the spawned workers before torch loads
        pool = self.make_pool()
        interrupted = False
        try:
            while self.pending or busy(pool):
                for worker in pool.workers:
                    if worker.job is None and self.pending:
                        pool.assign(worker, self.pending.pop(0))
                event = pool.next_event(timeout=0.5)
                if event is not None:
                    self.handle(pool, event)
                self.reap(pool)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: stopping the workers; finished files are kept, a rerun resumes")
        finally:
            unfinished = [worker.job for worker in busy(pool)]
            pool.close(force=interrupted)
            for job in unfinished if interrupted else []:
                remove_leftovers(self.config.output, job)
            self.files_bar.close()
            self.parts_bar.close()
        return interrupted

    def handle(self, pool, event) -> None:
        if isinstance(event, logging.LogRecord):
            if event.name == "py.warnings":
                event.levelno, event.levelname = logging.DEBUG, "DEBUG"
            log.handle(event)
            return
        kind, worker_id, index, payload = event
        if kind == "file_started":  # the timeout runs from here, not from the worker's start-up
            worker = pool.workers[worker_id]
            if worker.started is not None:
                log.warning("%s: started again, its worker was restarted", worker.job.source)
            worker.started = time.monotonic()
        elif kind == "stage_started":
            job = pool.workers[worker_id].job
            self.activity[worker_id] = f"{job.source.name} {payload['stage']} #{payload['part']}" if job else ""
            self.show_activity()
        elif kind == "part_done" and (payload["output"], payload["part"]) not in self.recorded:
            self.recorded.add((payload["output"], payload["part"]))
            append_manifest(self.manifest, payload)
            self.parts_bar.update(1)
        elif kind == "file_done":
            self.finish(pool.workers[worker_id], payload)

    def finish(self, worker: Worker, report: dict) -> None:
        job = worker.job
        self.activity.pop(worker.id, None)
        self.show_activity()
        worker.job = None
        if job.shard:
            self.shard_done(job, report)
            return
        self.reports[job.index] = report
        self.files_bar.update(1)

    def shard_done(self, shard: FileJob, report: dict) -> None:
        """Once a file's last shard is in, its own job goes first in line: it restores the shards' parts (and
        redoes any a failed shard left), links speakers, draws and reports."""
        carried = self.carried.setdefault(shard.index, {"seconds": {}, "processing": 0.0, "parts": 0})
        for name, details in report.get("stages", {}).items():
            carried["seconds"][name] = carried["seconds"].get(name, 0.0) + details.get("seconds", 0.0)
        carried["processing"] += report.get("processing_seconds", 0.0)
        carried["parts"] += report.get("parts", 0) - report.get("parts_reused", 0)
        if report.get("started_at"):
            carried["started_at"] = min(carried.get("started_at", report["started_at"]), report["started_at"])
        self.shards_left[shard.index] -= 1
        if self.shards_left[shard.index] == 0:
            job = next(job for job in self.jobs if job.index == shard.index)
            earlier = reusable_parts(self.config.output, job, read_manifest(self.config.output))
            self.pending.insert(0, replace(job, earlier=earlier, carried=carried))

    def show_activity(self) -> None:
        self.parts_bar.set_postfix_str(" | ".join(self.activity[w] for w in sorted(self.activity)))

    def reap(self, pool) -> None:
        """Fail and replace workers that died or ran past the timeout."""
        now = time.monotonic()
        for worker in busy(pool):
            error = pool.failure(worker)
            if error:
                self.drain(pool)  # what it sent before dying still counts
                if worker.job is None:
                    pool.replace(worker)
                    continue
            elif worker.started is not None and now - worker.started > self.config.timeout:
                error = f"timed out after {self.config.timeout:g} s"
            else:
                continue
            log.error("%s: %s", worker.job.source, error)
            job = worker.job
            self.finish(worker, _failed_report(job, error, now - (worker.started or now)))
            pool.replace(worker)
            remove_leftovers(self.config.output, job)

    def drain(self, pool) -> None:
        while (event := pool.next_event(timeout=0.2)) is not None:
            self.handle(pool, event)

    def make_pool(self):
        if self.config.backend == "ray":
            from ray_backend import RayWorkerPool

            return RayWorkerPool(self.config, self.devices, self.workers, self.threads)
        return WorkerPool(self.config, self.devices, self.workers, self.threads)


def busy(pool) -> list[Worker]:
    return [worker for worker in pool.workers if worker.job is not None]


def run_batch(config: RunConfig, devices: DevicePlan, jobs: list[FileJob], workers: int, quiet: bool = False,
              overwrite: bool = False) -> dict:
    """Process every job not finished in an earlier run; returns the run summary (also written to summary.json
    and printed)."""
    started = time.monotonic()
    if overwrite:
        clear_outputs(config.output, jobs)
    jobs = [replace(job, fingerprints=stage_fingerprints(config, job.source)) for job in jobs]
    records = read_manifest(config.output)
    finished = {} if overwrite else finished_reports(config.output, jobs, records)
    todo = [replace(job, earlier=reusable_parts(config.output, job, records)) for job in jobs
            if job.index not in finished]
    kept_lines = {(job.key, index) for job in todo for index, record in job.earlier.items()
                  if fully_reused(job, record)}
    finished_keys = {job.key for job in jobs if job.index in finished}
    rewrite_manifest(config.output, lambda r: r.get("output") in finished_keys
                     or (r.get("output"), r.get("part")) in kept_lines)
    for job in todo:  # nothing of an earlier, unfinished or different run stays, except the parts it keeps
        prepare_redo(config.output, job)
    for scratch in config.output.glob(".scratch-*"):  # left by a run that was killed
        shutil.rmtree(scratch, ignore_errors=True)
    if finished:
        log.warning("resuming: %d of %d file(s) already done with the same settings are skipped "
                    "(--overwrite redoes them)", len(finished), len(jobs))
    if kept_lines:
        log.warning("resuming: %d part(s) finished in an earlier run are kept", len(kept_lines))
    reports, interrupted, used_workers = {}, False, 0
    if todo:
        disable_downloads_when_offline(log.info)
        batch = BatchRun(config, devices, todo, workers, quiet)
        interrupted = batch.run()
        reports, used_workers = batch.reports, batch.workers
        for job in todo:  # no worker runs now: what a killed or retried attempt left can go
            remove_leftovers(config.output, job)
    ordered = [reports[job.index] for job in todo if job.index in reports]
    summary = summarize(ordered, time.monotonic() - started, used_workers, finished_at=time.time())
    summary["files_skipped"] = len(finished)
    summary["parts_reused"] = sum(report.get("parts_reused", 0) for report in ordered)
    summary["interrupted"] = interrupted
    write_json(config.output / "summary.json", summary)
    write_html_report(config.output, summary, list(finished.values()) + ordered)
    block = statistics_block(summary)
    log.info("\n%s", block)
    if not quiet:
        print(block, flush=True)
    return summary


def setup_logging(output: Path, verbose: bool = False, quiet: bool = False) -> None:
    """The detailed log goes to <output>/audio_processing.log; the console gets warnings (all with -v)."""
    logger = logging.getLogger("audio_processing")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(output / "audio_processing.log", encoding="utf-8")
    file_handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(file_handler)
    console = TqdmHandler()
    console.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(console)


class TqdmHandler(logging.Handler):
    """Console lines written through tqdm, so they do not tear the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)
