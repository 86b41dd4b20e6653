"""The batch's jobs: one per input file, with its output folder; long files cut into shards of parts."""

from __future__ import annotations

from collections import Counter
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
    """One job per file, each with an output folder of its own (output_keys)."""
    root = input_root if input_root.is_dir() else input_root.parent
    relative = [file.relative_to(root) if file.is_relative_to(root) else Path(file.name) for file in files]
    return [FileJob(i, file, key) for i, (file, key) in enumerate(zip(files, output_keys(relative)))]


def safe_name(name: str) -> str:
    """A path component that stays where it is put: '.', '..' and hidden names (which could be the run's own
    scratch folders) get a leading '_' instead of their dots."""
    return "_" + name.lstrip(".") if name.startswith(".") else name


def output_keys(relative: list[Path]) -> list[str]:
    """Each input's output folder under --output, decided for the whole batch before any work: its relative path
    without the extension, each part a safe name; with the extension where two inputs would share a folder
    (a.wav, a.flac); numbered where even that is not enough (a.wav beside a.wav.mp3). Compared without case,
    as case-insensitive file systems do."""
    def key(rel: Path, with_extension: bool) -> str:
        return "/".join(safe_name(part) for part in (*rel.parts[:-1], rel.name if with_extension else rel.stem))

    plain = [key(rel, False) for rel in relative]
    counts = Counter(k.casefold() for k in plain)
    wanted = [key(rel, True) if counts[k.casefold()] > 1 else k for rel, k in zip(relative, plain)]
    keys, taken = [], set()
    for candidate in wanted:
        unique, number = candidate, 1
        while unique.casefold() in taken:
            number += 1
            unique = f"{candidate}~{number}"
        taken.add(unique.casefold())
        keys.append(unique)
    return keys


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
