"""The batch's jobs: one per input file, with its output folder; long files cut into shards of parts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from audio_io import AudioError, probe_audio
from config import RunConfig
from stages.split import Split


@dataclass(frozen=True)
class FileJob:
    index: int
    source: Path
    key: str  # the file's output folder, relative to the output root
    fingerprints: dict[str, str] = field(default_factory=dict)  # stage -> fingerprint of what shapes its output
    earlier: dict[int, dict] = field(default_factory=dict)  # part -> its record from an earlier run, if reusable
    shard: tuple[int, int | None] | None = None  # only these parts [first, end), for another worker; no report
    carried: dict = field(default_factory=dict)  # what the file's shards spent: seconds per stage, parts done


def plan_jobs(files: list[Path], input_root: Path) -> list[FileJob]:
    """One job per file; outputs go to <relative path without extension>, or with it when two names clash."""
    root = input_root if input_root.is_dir() else input_root.parent
    relative = [file.relative_to(root) if file.is_relative_to(root) else Path(file.name) for file in files]
    stems = [rel.with_suffix("").as_posix() for rel in relative]
    clashing = {stem for stem in stems if stems.count(stem) > 1}
    return [FileJob(i, file, rel.as_posix() if stem in clashing else stem)
            for i, (file, rel, stem) in enumerate(zip(files, relative, stems))]


def shard_jobs(config: RunConfig, jobs: list[FileJob], workers: int) -> list[FileJob]:
    """With fewer files than twice the workers, cut each time-split file into shards of consecutive parts, so
    the parts of one long file are spread over the workers. Each shard is a job; when all of a file's shards are
    done, the file's own job restores their parts and links speakers, draws and reports (see runner.BatchRun).
    A word-boundary split is not sharded: each cut depends on the one before."""
    if workers < 2 or len(jobs) >= 2 * workers or "split" not in config.steps or config.split_method != "time":
        return jobs
    planned = []
    for job in jobs:
        try:
            probe = probe_audio(job.source)
        except AudioError:
            planned.append(job)  # its own job reports the problem
            continue
        parts = Split.time_parts(config, round(probe.duration * probe.sample_rate), probe.sample_rate)
        count = min(parts, -(-2 * workers // len(jobs)))  # ceil
        if count < 2:
            planned.append(job)
            continue
        bounds = [round(k * parts / count) for k in range(count)] + [None]  # the last shard runs to the end
        planned += [replace(job, shard=(first, end)) for first, end in zip(bounds, bounds[1:])]
    return planned
