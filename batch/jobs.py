"""The batch's jobs: one per input file, with its output folder; long files cut into shards of parts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from audio_io import AudioError, name_problem, printable_path, probe_audio
from config import RunConfig
from layout import RUN_NAMES
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
    problem: str | None = None  # why it fails before any work (its name), said once by the batch
    finish_settings: str = ""  # fingerprint of the options only the stages' finish() reads (see resume)

    @property
    def file_id(self) -> str:
        """The RTTM file-id: the input's stem, with whitespace replaced (RTTM fields are split on whitespace)."""
        return "_".join(self.source.stem.split()) or "_"


def plan_jobs(files: list[Path], input_root: Path) -> list[FileJob]:
    """One job per file, each with an output folder of its own (output_keys)."""
    root = input_root if input_root.is_dir() else input_root.parent
    relative = [Path(printable_path(file.relative_to(root) if file.is_relative_to(root) else Path(file.name)))
                for file in files]
    return [FileJob(i, file, key, problem=name_problem(file))
            for i, (file, key) in enumerate(zip(files, output_keys(relative)))]


def safe_name(name: str, top_level: bool = False) -> str:
    """A path component that stays where it is put: '.', '..' and hidden names get a leading '_' instead of their
    dots (the run's work folder is hidden), and at the top a name of the run's own (summary.json...) gets '_'."""
    if name.startswith("."):
        return "_" + name.lstrip(".")
    if top_level and name.casefold() in {own.casefold() for own in RUN_NAMES}:
        return "_" + name
    return name


def output_keys(relative: list[Path]) -> list[str]:
    """Each input's output folder under --output, decided for the whole batch before any work: its relative path
    without the extension, each part a safe name. No two inputs share a folder and none holds another's (a.wav's
    folder a/ would hold a/speech.wav's outputs beside its own speech/): those take their extension (a.wav,
    a.flac), and a number where even that is not enough (a.wav beside a.wav.mp3). Compared without case, as
    case-insensitive file systems do."""
    def key(rel: Path, with_extension: bool) -> str:
        parts = (*rel.parts[:-1], rel.name if with_extension else rel.stem)
        return "/".join(safe_name(part, top_level=i == 0) for i, part in enumerate(parts))

    def clashes(keys: list[str], i: int, first_keeps: bool = True) -> bool:
        """Key i is an earlier input's (or any other's), or the folder that holds another's: key i moves."""
        mine = keys[i].casefold()
        return any(j != i and ((j < i or not first_keeps) and other.casefold() == mine
                               or other.casefold().startswith(mine + "/")) for j, other in enumerate(keys))

    keys = [key(rel, False) for rel in relative]
    keys = [key(rel, True) if clashes(keys, i, first_keeps=False) else keys[i] for i, rel in enumerate(relative)]
    for i in range(len(keys)):
        plain, number = keys[i], 1
        while clashes(keys, i):
            number += 1
            keys[i] = f"{plain}~{number}"
    return keys


def shard_jobs(config: RunConfig, jobs: list[FileJob], workers: int) -> list[FileJob]:
    """With fewer files than twice the workers, cut each time-split file into shards of consecutive parts, so
    the parts of one long file are spread over the workers. Each shard is a job; when all of a file's shards are
    done, the file's own job restores their parts, clusters the speakers, draws and reports (see run.BatchRun).
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
