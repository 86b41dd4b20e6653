"""The batch: files shared out to workers, progress, the log, the manifest and the summary.

Workers are started with the spawn method and each loads its models once. The main process is the only writer
of the manifest and the log; workers send it events (log records, finished parts, finished files) over one
queue. A worker that exceeds --timeout or dies is replaced, and its file is reported as failed.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from dataclasses import replace

import psutil
from tqdm import tqdm

from audio_io import out_of_space, write_json
from batch.jobs import FileJob, shard_jobs
from batch.local_pool import WorkerPool
from batch.pipeline import remove_leftovers
from batch.resume import (clear_outputs, finished_reports, finish_fingerprint, fully_reused, prepare_redo,
                          read_manifest, remove, reusable_parts, rewrite_manifest, stage_fingerprints)
from batch.worker import Pool, Worker, failed_report, set_thread_variables
from config import RunConfig
from gpu_memory import DevicePlan, usable_cores
from layout import HTML_REPORT, MANIFEST, SUMMARY, scratch_root
from loaders.model_store import disable_downloads_when_offline
from reporting.html_report import write_html_report
from reporting.reports import append_manifest, statistics_block, summarize
from stages import STAGES

log = logging.getLogger("audio_processing")


def get_optimal_workers() -> int:
    """The seed guide's rule: half the cores, fewer when RAM is short."""
    cpu_count = usable_cores()
    memory_gb = psutil.virtual_memory().total / 1024 ** 3
    if cpu_count >= 12 and memory_gb >= 24:
        return min(6, cpu_count // 2)
    if cpu_count >= 8 and memory_gb >= 16:
        return min(4, cpu_count // 2)
    return max(1, min(2, cpu_count // 2))


def threads_per_worker(workers: int) -> int:
    """Workers x threads ~ cores: oversubscribed torch threads ran 6x-150x slower here."""
    return max(1, usable_cores() // workers)


class BatchRun:
    """The main process's side of a batch: hands out jobs, records events, replaces stuck workers."""

    def __init__(self, config: RunConfig, devices: DevicePlan, jobs: list[FileJob], workers: int, quiet: bool,
                 started: float):
        self.config, self.devices, self.jobs = config, devices, jobs
        self.started = started  # when the run began (time.monotonic)
        self.first_output: float | None = None  # seconds from then to the first part written
        self.worker_start: dict[int, float] = {}  # worker -> seconds from the pool's start to its first file
        self.pending = list(shard_jobs(config, jobs, workers))  # long files' parts shared out when files are few
        self.shards_left = Counter(job.index for job in self.pending if job.shard)
        self.carried: dict[int, dict] = {}  # file -> what its finished shards spent
        self.workers = max(1, min(workers, len(self.pending)))
        self.threads = threads_per_worker(self.workers)
        self.manifest = config.output / MANIFEST
        self.reports: dict[int, dict] = {}
        bars = {"disable": True} if quiet else {"disable": None}  # None: shown on a terminal only
        self.files_bar = tqdm(total=len(jobs), desc="files", unit="file", position=0, **bars)
        self.parts_bar = tqdm(desc="parts", unit="part", position=1, **bars)
        self.activity: dict[int, str] = {}  # worker -> what it is doing, shown beside the parts bar
        self.recorded: set[tuple[str, int]] = set()  # parts in the manifest; a retried file's parts are not again
        self.stopped_by: str | None = None  # why no new file is started (a full disk)

    def run(self) -> str | None:
        """The signal that interrupted the run (Ctrl-C's SIGINT, or SIGTERM), or None."""
        log.info("processing %d file(s) with %d worker(s), %d thread(s) each%s", len(self.jobs), self.workers,
                 self.threads, f"; {len(self.shards_left)} long file(s) shared out in {sum(self.shards_left.values())}"
                 " shards" if self.shards_left else "")
        set_thread_variables(self.threads)  # inherited by the spawned workers before torch loads
        self.pool_started = time.monotonic()
        pool = self.make_pool()
        interrupted = None
        try:
            while self.pending or busy(pool):
                for worker in pool.workers:
                    if worker.job is None and self.pending:
                        pool.assign(worker, self.pending.pop(0))
                event = pool.next_event(timeout=0.5)
                if event is not None:
                    self.handle(pool, event)
                self.reap(pool)
        except KeyboardInterrupt as stop:
            interrupted = "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"
            log.warning("interrupted (%s): stopping the workers; finished files are kept, a rerun resumes",
                        interrupted)
        finally:
            unfinished = [worker.job for worker in busy(pool)]
            pool.close(force=interrupted)
            for job in unfinished if interrupted else []:
                remove_leftovers(self.config.output, job)
            self.files_bar.close()
            self.parts_bar.close()
        return interrupted

    def handle(self, pool: Pool, event) -> None:
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
            self.worker_start.setdefault(worker_id, worker.started - self.pool_started)
        elif kind == "stage_started":
            job = pool.workers[worker_id].job
            self.activity[worker_id] = f"{job.source.name} {payload['stage']} #{payload['part']}" if job else ""
            self.show_activity()
        elif kind == "part_done" and (payload["output"], payload["part"]) not in self.recorded:
            try:
                append_manifest(self.manifest, payload)
            except OSError as problem:  # the part is not recorded, so a rerun redoes it
                if not out_of_space(problem, self.config.output):
                    raise
                self.stop_starting(f"no space left on device ({self.config.output})")
                return
            self.recorded.add((payload["output"], payload["part"]))
            self.parts_bar.update(1)
            if self.first_output is None:
                self.first_output = time.monotonic() - self.started
        elif kind == "file_done":
            self.finish(pool.workers[worker_id], payload)

    def finish(self, worker: Worker, report: dict) -> None:
        if report.get("stops_batch"):
            self.stop_starting(report["error"])
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
        redoes any a failed shard left), clusters the speakers, draws and reports."""
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

    def stop_starting(self, reason: str) -> None:
        """No new file is started: the files not started are reported as not done (a rerun resumes them)."""
        if self.stopped_by is None:
            self.stopped_by = reason
            log.error("%s: no new file is started; make room and rerun (finished files are kept)", reason)
        for job in self.pending:
            if job.index not in self.reports:
                self.reports[job.index] = failed_report(job, f"not started: {reason}", 0.0)
                self.files_bar.update(1)
        self.pending.clear()

    def show_activity(self) -> None:
        self.parts_bar.set_postfix_str(" | ".join(self.activity[w] for w in sorted(self.activity)))

    def reap(self, pool: Pool) -> None:
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
            self.finish(worker, failed_report(job, error, now - (worker.started or now)))
            pool.replace(worker)
            remove_leftovers(self.config.output, job)

    def drain(self, pool: Pool) -> None:
        while (event := pool.next_event(timeout=0.2)) is not None:
            self.handle(pool, event)

    def make_pool(self) -> Pool:
        if self.config.backend == "ray":
            from batch.ray_pool import RayWorkerPool

            return RayWorkerPool(self.config, self.devices, self.workers, self.threads)
        return WorkerPool(self.config, self.devices, self.workers, self.threads)


def busy(pool: Pool) -> list[Worker]:
    return [worker for worker in pool.workers if worker.job is not None]


def run_batch(config: RunConfig, devices: DevicePlan, jobs: list[FileJob], workers: int, quiet: bool = False,
              overwrite: bool = False) -> dict:
    """Process every job not finished in an earlier run; returns the run summary (also written to summary.json
    and printed)."""
    previous_handler = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run_batch(config, devices, jobs, workers, quiet, overwrite)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm, systemd and docker stop send): the run stops as on Ctrl-C, cleanly."""


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
    raise Terminated


def _run_batch(config: RunConfig, devices: DevicePlan, jobs: list[FileJob], workers: int, quiet: bool,
               overwrite: bool) -> dict:
    started = time.monotonic()
    rejected = [failed_report(job, job.problem, 0.0) for job in jobs if job.problem]
    for report in rejected:
        log.error("%s: %s", report["source"], report["error"])
    jobs = [job for job in jobs if not job.problem]
    if overwrite:
        clear_outputs(config.output, jobs)
    finish = finish_fingerprint(config)
    jobs = [replace(job, fingerprints=stage_fingerprints(config, job.source), finish_settings=finish) for job in jobs]
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
    remove(config.output, scratch_root(config.output))  # left by a run that was killed (this run holds the lock)
    for job in jobs:  # a kill while a finished file's report was being written leaves its temp file too
        remove_leftovers(config.output, job)
    if finished:
        log.warning("resuming: %d of %d file(s) already done with the same settings are skipped "
                    "(--overwrite redoes them)", len(finished), len(jobs))
    if kept_lines:
        log.warning("resuming: %d part(s) finished in an earlier run are kept", len(kept_lines))
    reports, interrupted, used_workers, first_output, worker_start = {}, None, 0, None, {}
    if todo:
        disable_downloads_when_offline(log.info)
        batch = BatchRun(config, devices, todo, workers, quiet, started)
        interrupted = batch.run()
        reports, used_workers, first_output = batch.reports, batch.workers, batch.first_output
        worker_start = batch.worker_start
        for job in todo:  # no worker runs now: what a killed or retried attempt left can go
            remove_leftovers(config.output, job)
        remove(config.output, scratch_root(config.output))
    ordered = rejected + [reports[job.index] for job in todo if job.index in reports]
    summary = summarize(ordered, time.monotonic() - started, used_workers, finished_at=time.time())
    summary["files_skipped"] = len(finished)
    summary["parts_reused"] = sum(report.get("parts_reused", 0) for report in ordered)
    summary["time_to_first_output"] = None if first_output is None else round(first_output, 2)
    summary["worker_start_seconds"] = [round(worker_start[worker], 2) for worker in sorted(worker_start)]
    summary["interrupted"] = interrupted is not None
    summary["interrupted_by"] = interrupted
    try:
        for stage in (STAGES[name] for name in config.steps):
            stage.finish_run(config.output, list(finished.values()) + ordered)
        write_json(config.output / SUMMARY, summary)
        write_html_report(config.output, summary, list(finished.values()) + ordered)
    except OSError as problem:  # a full disk: the statistics are still printed
        log.error("%s and %s not written: %s", SUMMARY, HTML_REPORT, problem.strerror or problem)
    block = statistics_block(summary)
    log.info("\n%s", block)
    print(block, flush=True)  # also with --quiet: "only errors and the final statistics"
    return summary
