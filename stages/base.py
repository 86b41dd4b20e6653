"""What every stage shares: the Part that flows through the pipeline, the per-file context, the Stage interface.

A stage turns one part into one or more parts (`run` is a generator): split yields many, the others yield the
part they were given with new audio or new annotations. Chaining generators makes each part go through every
stage before the next part is cut, so memory and disk use do not grow with the number of parts.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np

from audio_io import AudioInfo, as_float, iter_blocks, read_frames
from layout import whole_file_name
from options import Option

if TYPE_CHECKING:  # torch is imported where it is used: the main process imports the stages and needs no torch
    import torch

MODEL_SAMPLE_RATE = 16000  # what Whisper, Silero and pyannote expect


@dataclass
class Part:
    index: int
    start_frame: int  # where the part begins in the original file
    frames: int
    sample_rate: int
    channels: int
    audio: AudioInfo  # the file that holds this part's current audio
    audio_start: int = 0  # first frame of the part inside audio.path
    outputs: dict[str, str] = field(default_factory=dict)  # output kind -> path relative to the output folder
    fields: dict[str, Any] = field(default_factory=dict)  # text, speech_duration, speakers... for the manifest
    reused: set[str] = field(default_factory=set)  # stages whose output was kept from an earlier run
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return f"part_{self.index:04d}"

    @property
    def offset(self) -> float:
        return self.start_frame / self.sample_rate

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def set_audio(self, audio: AudioInfo) -> None:
        self.audio, self.audio_start = audio, 0
        self._cache.clear()

    def read(self, dtype: str | None = None) -> np.ndarray:
        return read_frames(self.audio, self.audio_start, self.frames, dtype)

    def blocks(self, block_frames: int, dtype: str | None = None) -> Iterator[np.ndarray]:
        return iter_blocks(self.audio, self.audio_start, self.frames, block_frames, dtype)

    def mono_16k(self) -> torch.Tensor:
        """The part as 16 kHz mono float32, decoded and resampled once and shared by the stages that need it."""
        if "mono_16k" not in self._cache:
            import torch

            audio = torch.from_numpy(as_float(self.read()).mean(axis=1))
            self._cache["mono_16k"] = resample(audio, self.sample_rate, MODEL_SAMPLE_RATE)
        return self._cache["mono_16k"]


@contextmanager
def one_thread_on_cpu(device: str) -> Iterator[None]:
    """Models of many small operations (Silero, pyannote's segmentation LSTM and CAM++) ran 2-3x slower on two
    torch threads than on one here: each small step waits for the other thread. On the CPU they get one."""
    import torch

    saved = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def resample(audio: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    if from_rate == to_rate:
        return audio
    import torchaudio.functional

    return torchaudio.functional.resample(audio, from_rate, to_rate)


def with_context(part: "Part", source: AudioInfo, margin_seconds: float) -> tuple[float, torch.Tensor]:
    """The part's 16 kHz mono audio with up to `margin_seconds` of the input on each side (the input's audio: the
    part's own file ends at the cut), so that a model hears whole what the split cut. Returns (its start on the
    file's timeline in seconds, 1-D audio)."""
    import torch

    margin = round(margin_seconds * source.sample_rate)
    first = max(0, part.start_frame - margin)
    end = min(source.frames, part.start_frame + part.frames + margin)

    def input_audio(start: int, stop: int) -> torch.Tensor:
        if stop <= start:
            return torch.zeros(0)
        mono = torch.from_numpy(as_float(read_frames(source, start, stop - start)).mean(axis=1))
        return resample(mono, source.sample_rate, MODEL_SAMPLE_RATE)

    pieces = [input_audio(first, part.start_frame), part.mono_16k(),
              input_audio(part.start_frame + part.frames, end)]
    return first / source.sample_rate, torch.cat(pieces)


@dataclass
class FileContext:
    """One input file's run: where outputs go, what the report records."""

    source: Path
    file_id: str  # the RTTM file-id: the input's stem
    out_dir: Path  # results/<relative input path without extension>
    output_root: Path  # results/
    scratch_dir: Path
    log: logging.Logger
    source_info: AudioInfo | None = None
    notes: list[str] = field(default_factory=list)  # fallbacks and warnings, for the report
    fallbacks: dict[str, str] = field(default_factory=dict)  # stage -> the model used instead of the one asked for
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why it could not run at all
    stage_info: dict[str, dict] = field(default_factory=dict)  # per stage: method, model, device...
    parts: list[Part] = field(default_factory=list)  # finished parts
    earlier: dict[int, dict] = field(default_factory=dict)  # part index -> its manifest record from an earlier run
    shard: tuple[int, int | None] | None = None  # only parts [first, end) of the file, when it is shared out

    def whole_file_path(self, pattern: str) -> Path:
        """Where a whole-file output declared as "<stem>.rttm" goes for this file."""
        return self.out_dir / whole_file_name(self.file_id, pattern)

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.output_root).as_posix()

    def note(self, message: str) -> None:
        """A fallback or problem the user must hear about: logged as a warning and kept for the report."""
        if message not in self.notes:
            self.notes.append(message)
            self.log.warning("%s: %s", self.source, message)

    def fallback(self, stage: str, used: str, wanted: str, reason: str) -> None:
        """The stage ran with another real model than the one asked for: a warning, counted in the statistics."""
        self.fallbacks[stage] = used
        self.note(f"{stage}: used {used} instead of {wanted}: {reason}")

    def skip(self, stage: str, reason: str) -> None:
        """The stage had no model at all and did not run: the file is incomplete (exit status 1)."""
        self.skipped[stage] = reason
        self.note(f"{stage} not run: {reason}")


@dataclass(frozen=True)
class Output:
    """A per-part output: <file folder>/<folder>/part_NNNN<suffix>, listed in the manifest under its kind."""

    folder: str
    suffix: str
    optional: bool = False  # only some parts have it
    when: Callable[[Any], bool] | None = None  # written only with these settings (for the dry run's list)

    def pattern(self) -> str:
        return f"{self.folder}/part_NNNN{self.suffix}"


class Stage:
    """One step of the pipeline, declared in one file: its name on the command line, its options, its outputs,
    its manifest fields and its run-time estimate; everything that lists stages is built from these (see
    stages/__init__.py). Subclasses implement `run`; `finish` is for whole-file output.

    For resuming, a stage also says which options change its output (`settings`) and how to take a part's
    output back from an earlier run (`restore`).
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # what it does, in a few words (--help, the dry run)
    options: ClassVar[tuple[Option, ...]] = ()  # its own options; RunConfig has a field for each
    outputs: ClassVar[dict[str, Output]] = {}  # manifest `outputs` kind -> where the part's file goes
    file_outputs: ClassVar[tuple[str, ...]] = ()  # whole-file outputs, e.g. "<stem>.rttm"
    shared_outputs: ClassVar[tuple[str, ...]] = ()  # folders of the results folder that hold a subfolder per file
    manifest_fields: ClassVar[tuple[str, ...]] = ()  # manifest fields it sets, brought back by `restore`
    changes_audio: ClassVar[bool] = False  # the stages after it read the audio it wrote
    by_default: ClassVar[bool] = True  # in --steps when the user names none (the seed guide's four stages)

    def __init__(self, config, models):
        self.config = config
        self.models = models

    @classmethod
    def output_kinds(cls) -> tuple[str, ...]:
        """The outputs that prove a part went through the stage."""
        return tuple(kind for kind, output in cls.outputs.items() if not output.optional)

    def output_path(self, ctx: FileContext, kind: str, part: Part) -> Path:
        output = self.outputs[kind]
        return ctx.out_dir / output.folder / f"{part.name}{output.suffix}"

    @classmethod
    def describe(cls, config) -> str:
        """The stage's settings in a few words, for the dry run's plan."""
        return ""

    @classmethod
    def real_time_factor(cls, config) -> float:
        """Seconds of work per second of audio with these settings, measured on a 2-core CPU (bench/stage_rtf.py,
        OPTIMIZATION.md): the dry run's and the interactive prompt's estimate."""
        return 0.0

    @classmethod
    def locate_models(cls, config, models) -> tuple[str, str | None]:
        """(the model the stage will use and where it comes from, why that is a fallback or None), asked in the
        main process before any work (no torch); ModelUnavailable when the stage has no model at all."""
        return "no model", None

    @staticmethod
    def check(config) -> list[str]:
        """What is wrong in a combination of this stage's options (each option alone is checked when read)."""
        return []

    def preload(self) -> None:
        """Load the models `run` will use before any file, in the process the CPU workers are forked from
        (batch/shared_models.py), so that they share one copy. A ModelUnavailable is left for `run` to report."""

    def run(self, part: Part, ctx: FileContext) -> Iterator[Part]:
        raise NotImplementedError

    def finish(self, ctx: FileContext) -> None:
        """Called once after every part of the file went through all stages."""

    @classmethod
    def finish_run(cls, output: Path, reports: list[dict]) -> None:
        """Run-wide outputs, written in the main process after the batch from the reports of its files (this
        run's and the earlier runs' files that were kept)."""

    @staticmethod
    def settings(config) -> dict:
        """The options that change what this stage writes: a rerun with other values redoes the stage."""
        return {}

    @staticmethod
    def finish_settings(config) -> dict:
        """The options that change only what `finish` writes (whole-file outputs): a rerun with other values
        keeps every part's output and redoes `finish` alone."""
        return {}

    def restore(self, part: Part, record: dict, ctx: FileContext) -> None:
        """Take the part's output of this stage from an earlier run instead of computing it again."""
        part.outputs.update({kind: path for kind, path in record["outputs"].items() if kind in self.outputs})
        part.fields.update({key: record[key] for key in self.manifest_fields if key in record})
        part.reused.add(self.name)
        info = ctx.stage_info.setdefault(self.name, dict(self.settings(self.config)))
        info["reused_parts"] = info.get("reused_parts", 0) + 1
