"""One input file through the requested stages, top to bottom; what it produced goes into its report."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator

from audio_io import AudioError, is_temp_name, open_input, out_of_space
from batch.jobs import FileJob
from batch.resume import own_files, remove, settings_fingerprint
from config import RunConfig
from layout import scratch_root
from model_manager import ModelManager
from reporting.reports import manifest_record, write_file_report
from reporting.timeline import write_timeline
from stages import FileContext, Part, Stage, build_stages

log = logging.getLogger("audio_processing")

Emit = Callable[[str, dict], None]  # (event kind, payload): how a worker tells the main process


def _scratch_prefix(job: FileJob) -> str:
    return f"{job.index}-" + (f"s{job.shard[0]}-" if job.shard else "")


def remove_leftovers(output: Path, job: FileJob) -> None:
    """What a killed worker leaves of a file (or of a shard's parts): scratch folder, half-written temp files."""
    for scratch in scratch_root(output).glob(f"{_scratch_prefix(job)}*"):
        remove(output, scratch)
    for leftover in own_files(output, job):
        if is_temp_name(leftover.name) and _in_shard(job, leftover.name):
            remove(output, leftover)


def _in_shard(job: FileJob, name: str) -> bool:
    if job.shard is None:
        return True
    found = re.match(r"\.part_(\d+)\.", name)
    first, end = job.shard
    return bool(found) and int(found.group(1)) >= first and (end is None or int(found.group(1)) < end)


def process_file(job: FileJob, config: RunConfig, models: ModelManager, emit: Emit) -> dict:
    """Run every stage on one file. Never raises for a bad file: the failure goes into the report."""
    ctx = FileContext(source=job.source, file_id=job.file_id, out_dir=config.output / job.key,
                      output_root=config.output, scratch_dir=scratch_root(config.output), log=log,
                      earlier=job.earlier, shard=job.shard)
    timings: dict[str, float] = defaultdict(float, job.carried.get("seconds", {}))
    if job.shard:
        log.info("%s: parts %d to %s", job.source, job.shard[0], job.shard[1] - 1 if job.shard[1] else "the end")
    started, started_at = time.perf_counter(), time.time()
    status, error, reused, out_of_room, scratch = "done", None, 0, False, None
    try:
        scratch_root(config.output).mkdir(parents=True, exist_ok=True)  # in the try: a full disk fails here too
        scratch = Path(tempfile.mkdtemp(prefix=_scratch_prefix(job), dir=scratch_root(config.output)))
        ctx.scratch_dir = scratch
        info = open_input(job.source, scratch)
        ctx.source_info = info
        for note in info.notes:
            ctx.note(note)
        whole = Part(0, 0, info.frames, info.sample_rate, info.channels, info)
        stages = build_stages(config.steps, config, models)
        parts: Iterator[Part] = iter([whole])
        for stage in stages:
            parts = _timed(stage, parts, ctx, timings, models, emit)
        for part in parts:
            ctx.parts.append(part)
            if part.reused and part.reused == set(job.fingerprints):
                reused += 1  # nothing redone: its manifest line from the earlier run was kept
            else:
                emit("part_done", manifest_record(job, part, ctx))
        if job.shard is None:  # a shard's parts are finished by the file's own job
            finish_file(ctx, stages, timings)
        if ctx.skipped:  # a stage that was asked for did not run: the run must not say the file is done
            status = "incomplete"
            error = "; ".join(f"{stage} not run: {reason}" for stage, reason in ctx.skipped.items())
    except Exception as problem:  # noqa: BLE001 - one file's failure must not stop the batch
        status, out_of_room = "failed", out_of_space(problem, config.output)
        if out_of_room:  # libsndfile says only "System error."
            error = f"no space left on device ({config.output})"
        elif isinstance(problem, AudioError):
            error = str(problem)
        else:
            error = f"{type(problem).__name__}: {problem}"
            log.debug("%s failed", job.source, exc_info=True)
    finally:
        if scratch is not None:
            remove(config.output, scratch)
    if status == "failed":  # a shard's error comes again from the file's own job: said once
        log.log(logging.DEBUG if job.shard else logging.ERROR, "%s: %s", job.source, error)
    seconds = time.perf_counter() - started + job.carried.get("processing", 0.0)
    report = write_file_report(ctx, job, status, error, dict(timings), seconds, device=models.gpu.device_label,
                               worker=os.getpid(), started_at=job.carried.get("started_at", started_at),
                               settings=settings_fingerprint(job),
                               parts_reused=reused - job.carried.get("parts", 0), write=job.shard is None)
    report["stops_batch"] = out_of_room  # no file after this one could be written either
    models.gpu.cleanup()
    return report


def finish_file(ctx: FileContext, stages: list[Stage], timings: dict) -> None:
    """Whole-file outputs, once every part is done: the stages' own (the file's speakers, RTTMs), then the picture."""
    for stage in stages:
        begun = time.perf_counter()
        stage.finish(ctx)
        timings[stage.name] += time.perf_counter() - begun
    try:
        write_timeline(ctx)
    except Exception as problem:  # noqa: BLE001 - a picture that cannot be drawn does not fail the file
        ctx.note(f"timeline.png not drawn: {type(problem).__name__}: {problem}")


def _timed(stage: Stage, parts: Iterator[Part], ctx: FileContext, timings: dict, models,
           emit: Emit) -> Iterator[Part]:
    """stage.run over every part, timing only the stage's own work (not the stages upstream of it); a part
    this stage finished in an earlier run is restored instead (split restores its own parts)."""
    for part in parts:
        earlier = ctx.earlier.get(part.index)
        if (stage.name != "split" and earlier and stage.name in earlier["reusable"]
                and ("split" in part.reused or "split" not in earlier["stages"])):
            stage.restore(part, earlier, ctx)
            yield part
            continue
        emit("stage_started", {"stage": stage.name, "part": part.index})
        outputs = stage.run(part, ctx)
        while True:
            begun = time.perf_counter()
            try:
                out = next(outputs)
            except StopIteration:
                timings[stage.name] += time.perf_counter() - begun
                break
            timings[stage.name] += time.perf_counter() - begun
            if models.gpu.enabled:
                models.gpu.cleanup()
            yield out
