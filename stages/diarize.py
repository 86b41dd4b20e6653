"""diar: pyannote.audio speaker diarization, written as RTTM on the original file's timeline.

Splitting a file must not cost accuracy, so the split only bounds the costly half of the work:
- each part runs pyannote's segmentation and speaker embeddings on its own span plus a margin of the input's
  audio beyond both edges (--diarization_margin), and keeps them (diarization/part_NNNN.npz: a resumed run has
  them too); its RTTM gets provisional labels, from clustering that part alone;
- when the file's last part is done, all parts' local speaker embeddings are clustered at once, with the
  pipeline's own clustering and threshold, exactly as an unsplit run would be, and every part's turns are
  rebuilt from that one result (each part keeps only its own span). The speaker-count options apply here, to the
  whole file. The file gets `<stem>.rttm` (overlapping speech kept) and `<stem>.exclusive.rttm` (at most one
  speaker at a time, pyannote's exclusive view: what words are given to speakers with).
Diarization reads the part's audio before silence removal: the pauses between turns help find speaker changes.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from audio_io import atomic_path, write_text
from model_manager import OFFLINE_DIARIZATION, ModelUnavailable
from options import Option, fraction, non_negative, positive
from stages.base import MODEL_SAMPLE_RATE, FileContext, Output, Part, Stage, one_thread_on_cpu, with_context

ANALYSIS_VERSION = 2  # what a part's .npz holds; older runs' parts are diarized again


class Turn(NamedTuple):
    start: float  # seconds on the original file's timeline
    end: float
    speaker: str


class Diarize(Stage):
    name = "diar"
    summary = "who spoke when, one speaker labelling for the whole file (RTTM)"
    options = (
        Option("diarization_model", "pyannote/speaker-diarization-3.1", "pyannote pipeline: hub name, local "
               "pipeline folder, or 'offline' (segmentation-3.0 + CAM++ from the model store)",
               question="Diarization model (hub name, folder, or offline)"),
        Option("hf_token", None, "Hugging Face token for hub pipelines", env="HF_TOKEN", secret=True,
               default_text="$HF_TOKEN"),
        Option("num_speakers", None, "exact number of speakers, when known", positive(int)),
        Option("min_speakers", None, "at least this many speakers", positive(int)),
        Option("max_speakers", None, "at most this many speakers", positive(int)),
        Option("clustering_threshold", 0.8, "offline pipeline: speaker clustering threshold", positive(float)),
        Option("min_cluster_size", 4, "offline pipeline: smaller speaker clusters (in embeddings) join a larger "
               "one", positive(int)),
        Option("segmentation_step", 0.2, "offline pipeline: segmentation window step, as a fraction of the "
               "window", fraction),
        Option("embedding_batch_size", 32, "offline pipeline: local speakers handed to the embedding model per "
               "call (each is embedded alone, on its own speech)", positive(int)),
        Option("diarization_margin", 10.0, "seconds of the input beyond each edge of a part that its diarization "
               "hears (context for turns cut by the split)", non_negative(float)),
    )
    outputs = {"diarization": Output("diarization", ".rttm"), "speaker_embeddings": Output("diarization", ".npz")}
    file_outputs = ("<stem>.rttm", "<stem>.exclusive.rttm")
    manifest_fields = ("speakers",)

    @classmethod
    def describe(cls, config) -> str:
        return config.diarization_model

    @classmethod
    def real_time_factor(cls, config) -> float:
        return 0.216  # pyannote segmentation + CAM++ embeddings, measured

    @classmethod
    def locate_models(cls, config, models) -> tuple[str, str | None]:
        problems = []
        for name in dict.fromkeys([config.diarization_model, OFFLINE_DIARIZATION]):
            try:
                source = models.diarization_source(name)
            except ModelUnavailable as error:
                problems.append(str(error))
                continue
            found = (f"{OFFLINE_DIARIZATION} pipeline (segmentation-3.0 + CAM++) from {models.models_dir}"
                     if name == OFFLINE_DIARIZATION else f"{name} from {source[0]}" if isinstance(source, tuple)
                     else f"{name} (downloaded from the Hugging Face hub)")
            return found, problems[0] if problems else None
        raise ModelUnavailable("; ".join(problems))

    @staticmethod
    def check(config) -> list[str]:
        if config.min_speakers and config.max_speakers and config.min_speakers > config.max_speakers:
            return ["--min_speakers is larger than --max_speakers"]
        return []

    @staticmethod
    def settings(config) -> dict:
        return {"model": config.diarization_model, "segmentation_step": config.segmentation_step,
                "margin": config.diarization_margin, "analysis": ANALYSIS_VERSION}

    @staticmethod
    def finish_settings(config) -> dict:
        """The file's one clustering: changing these reclusters the stored analyses, nothing is embedded again."""
        return {"num_speakers": config.num_speakers, "min_speakers": config.min_speakers,
                "max_speakers": config.max_speakers, "clustering_threshold": config.clustering_threshold,
                "min_cluster_size": config.min_cluster_size}

    def restore(self, part: Part, record: dict, ctx: FileContext) -> None:
        super().restore(part, record, ctx)
        with np.load(ctx.output_root / record["outputs"]["speaker_embeddings"], allow_pickle=False) as saved:
            part.fields["diarization"] = Analysis.from_arrays(saved)
            ctx.stage_info[self.name]["model"] = str(saved["model"])

    def run(self, part: Part, ctx: FileContext) -> Iterator[Part]:
        name = self._pipeline_name(ctx)
        if name is None:
            yield part
            return
        window_start, waveform = with_context(part, ctx.source_info, self.config.diarization_margin)
        waveform = waveform[None]

        def analyse(device: str, reduced: bool) -> Analysis:
            pipeline = self.models.get_diarization_pipeline(name, device=device, **self._params(name))
            with smaller_batches(pipeline, reduced), one_thread_on_cpu(device):
                return analyse_window(pipeline, waveform, window_start, part.offset, part.offset + part.duration)

        analysis = self.models.gpu.run_with_fallback(analyse, "diarization", on_fallback=ctx.note)
        part._cache.pop("mono_16k", None)
        part.fields["diarization"] = analysis
        saved = self.output_path(ctx, "speaker_embeddings", part)
        with atomic_npz(saved) as handle:
            np.savez_compressed(handle, model=name, **analysis.arrays())
        part.outputs["speaker_embeddings"] = ctx.relative(saved)
        # provisional labels, from this part alone, until finish() clusters the whole file
        pipeline = self.models.get_diarization_pipeline(name, **self._params(name))
        turns, _ = cluster_analyses(pipeline, [analysis], **self._speaker_counts(whole_file=False))[0]
        part.fields["speakers"] = len({turn.speaker for turn in turns})
        path = self.output_path(ctx, "diarization", part)
        write_text(path, rttm(ctx.file_id, turns))
        part.outputs["diarization"] = ctx.relative(path)
        yield part

    def finish(self, ctx: FileContext) -> None:
        parts = [part for part in ctx.parts if "diarization" in part.fields]
        if not parts:
            return
        name = ctx.stage_info[self.name]["model"]
        pipeline = self.models.get_diarization_pipeline(name, **self._params(name))
        labelled = cluster_analyses(pipeline, [part.fields["diarization"] for part in parts],
                                    **self._speaker_counts(whole_file=True))
        for part, (turns, _) in zip(parts, labelled):
            write_text(ctx.output_root / part.outputs["diarization"], rttm(ctx.file_id, turns))
        overlapping = sorted(turn for turns, _ in labelled for turn in turns)
        exclusive = sorted(turn for _, turns in labelled for turn in turns)
        paths = [ctx.whole_file_path(pattern) for pattern in self.file_outputs]
        for path, turns in zip(paths, (overlapping, exclusive)):
            write_text(path, rttm(ctx.file_id, turns))
        ctx.stage_info[self.name].update(rttm=ctx.relative(paths[0]), exclusive_rttm=ctx.relative(paths[1]),
                                         speakers=len({turn.speaker for turn in overlapping}))

    def _pipeline_name(self, ctx: FileContext) -> str | None:
        """The pipeline asked for, or the offline one when that cannot load; None when neither can."""
        wanted = self.config.diarization_model
        name, problems = self._first_loadable()
        if name is None:
            ctx.skip(self.name, "; ".join(problems))
            return None
        if problems:
            ctx.fallback(self.name, f"the {OFFLINE_DIARIZATION} pipeline", wanted, problems[0])
        ctx.stage_info.setdefault(self.name, {}).setdefault("model", name)
        return name

    def _first_loadable(self) -> tuple[str | None, list[str]]:
        """(the pipeline asked for, else the offline one, else None; why those before it did not load)."""
        problems = []
        for name in dict.fromkeys([self.config.diarization_model, OFFLINE_DIARIZATION]):
            try:
                self.models.get_diarization_pipeline(name, **self._params(name))
                return name, problems
            except ModelUnavailable as error:
                problems.append(str(error))
        return None, problems

    def preload(self) -> None:
        self._first_loadable()

    def _params(self, name: str) -> dict:
        if name != OFFLINE_DIARIZATION:
            return {}  # hub and folder pipelines come with their own tuned parameters
        return {"segmentation_step": self.config.segmentation_step, "threshold": self.config.clustering_threshold,
                "min_cluster_size": self.config.min_cluster_size,
                "embedding_batch_size": self.config.embedding_batch_size}

    def _speaker_counts(self, whole_file: bool) -> dict:
        """The speaker-count options apply to the whole file; a part alone may hold fewer speakers, never more."""
        config = self.config
        if whole_file:
            return {"num_speakers": config.num_speakers, "min_speakers": config.min_speakers,
                    "max_speakers": config.max_speakers}
        return {"num_speakers": None, "min_speakers": None, "max_speakers": config.max_speakers or config.num_speakers}


@contextmanager
def smaller_batches(pipeline, reduced: bool):
    """After an out-of-memory error: segmentation and embeddings one chunk at a time, then as before."""
    segmentation = getattr(pipeline, "_segmentation", None)
    saved = (getattr(pipeline, "embedding_batch_size", None), getattr(segmentation, "batch_size", None))
    if reduced and saved[0] is not None:
        pipeline.embedding_batch_size = 1
        if segmentation is not None:
            segmentation.batch_size = 1
    try:
        yield
    finally:
        if reduced and saved[0] is not None:
            pipeline.embedding_batch_size = saved[0]
            if segmentation is not None:
                segmentation.batch_size = saved[1]


def rttm(file_id: str, turns: list[Turn]) -> str:
    return "".join(f"SPEAKER {file_id} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n"
                   for t in turns)


def read_rttm(path: Path) -> list[Turn]:
    """The speaker turns of an RTTM file (any file's: ours, or a reference)."""
    turns = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "SPEAKER":
            start = float(fields[3])
            turns.append(Turn(start, start + float(fields[4]), fields[7]))
    return turns


@contextmanager
def atomic_npz(path: Path):
    """A binary handle whose file appears under `path` only when complete (numpy writes the archive into it)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle


@dataclass
class Analysis:
    """What pyannote computes for a part before clustering: per chunk of its sliding window, each local speaker's
    activity and embedding. Chunk times are on the file's timeline; `own` is the part's span, the rest margin."""

    chunk_start: float  # the first chunk's start, in seconds
    chunk_duration: float
    chunk_step: float
    own: tuple[float, float]
    heard: tuple[float, float]  # the audio analysed: own span and margins
    segmentations: np.ndarray  # (chunks, frames, local speakers): raw scores (0/1 for powerset models)
    embeddings: np.ndarray  # (chunks, local speakers, dimension); NaN where there is none

    def chunks(self):
        from pyannote.core import SlidingWindow

        return SlidingWindow(start=self.chunk_start, duration=self.chunk_duration, step=self.chunk_step)

    def owned(self) -> np.ndarray:
        """Chunks centred in the part's own span, or beyond an edge of it that has no margin: each chunk of the
        file is clustered once, by the part that owns it (a margin's chunks are the neighbour's)."""
        centres = self.chunk_start + self.chunk_step * np.arange(len(self.embeddings)) + self.chunk_duration / 2
        return (((centres >= self.own[0]) | (self.heard[0] >= self.own[0]))
                & ((centres < self.own[1]) | (self.heard[1] <= self.own[1])))

    def arrays(self) -> dict[str, np.ndarray]:
        binary = np.isin(self.segmentations, (0.0, 1.0)).all()
        return {"window": np.array([self.chunk_start, self.chunk_duration, self.chunk_step, *self.own, *self.heard]),
                "segmentations": self.segmentations.astype(np.uint8 if binary else np.float16),
                "embeddings": self.embeddings.astype(np.float16),  # a 3-hour file's: 6 MB
                "version": np.array(ANALYSIS_VERSION)}

    @classmethod
    def from_arrays(cls, saved) -> "Analysis":
        start, duration, step, *spans = saved["window"].tolist()
        return cls(start, duration, step, tuple(spans[:2]), tuple(spans[2:]), saved["segmentations"].astype(np.float32),
                   saved["embeddings"].astype(np.float32))


def analyse_window(pipeline, waveform, window_start: float, own_start: float, own_end: float) -> Analysis:
    """pyannote's segmentation and local speaker embeddings of one window of audio (what its pipeline computes
    before clustering)."""
    file = {"waveform": waveform, "sample_rate": MODEL_SAMPLE_RATE, "uri": "part"}
    segmentations = pipeline.get_segmentations(file)
    embeddings = pipeline.get_embeddings(file, _binarized(pipeline, segmentations),
                                         exclude_overlap=pipeline.embedding_exclude_overlap)
    chunks = segmentations.sliding_window
    heard = (window_start, window_start + waveform.shape[-1] / MODEL_SAMPLE_RATE)
    analysis = Analysis(window_start + chunks.start, chunks.duration, chunks.step, (own_start, own_end), heard,
                        np.asarray(segmentations.data, dtype=np.float32), np.asarray(embeddings, dtype=np.float32))
    return Analysis.from_arrays(analysis.arrays())  # as stored: a resumed run clusters exactly the same numbers


def _binarized(pipeline, segmentations):
    if pipeline._segmentation.model.specifications.powerset:
        return segmentations
    from pyannote.audio.utils.signal import binarize

    return binarize(segmentations, onset=pipeline.segmentation.threshold, initial_state=False)


def cluster_analyses(pipeline, analyses: list[Analysis], num_speakers: int | None = None,
                     min_speakers: int | None = None,
                     max_speakers: int | None = None) -> list[tuple[list[Turn], list[Turn]]]:
    """One clustering of all the parts' local speakers, with the pipeline's own clustering, then each part's
    turns rebuilt from it as the pipeline rebuilds a whole file's, cut to the part's own span. Returns per part
    (turns, exclusive turns), labelled SPEAKER_00... by first appearance in the file."""
    from pyannote.audio.pipelines.utils.diarization import set_num_speakers
    from pyannote.core import Segment, SlidingWindow, SlidingWindowFeature

    num_speakers, min_speakers, max_speakers = set_num_speakers(num_speakers, min_speakers, max_speakers)
    frames = pipeline._segmentation.model.receptive_field
    scores = [SlidingWindowFeature(a.segmentations, a.chunks()) for a in analyses]
    binarized = [_binarized(pipeline, score) for score in scores]
    # only the chunks a part owns choose the clusters; every chunk is then assigned to one
    training = np.concatenate([b.data * a.owned()[:, None, None] for a, b in zip(analyses, binarized)])
    embeddings = np.concatenate([a.embeddings for a in analyses])
    if not training.any():
        return [([], []) for _ in analyses]
    hard_clusters, _, _ = pipeline.clustering(
        embeddings=embeddings, segmentations=SlidingWindowFeature(training, SlidingWindow()),
        num_clusters=num_speakers, min_clusters=min_speakers, max_clusters=max_speakers, frames=frames)
    found, first = [], 0
    for analysis, score, binary in zip(analyses, scores, binarized):
        clusters = np.array(hard_clusters[first:first + len(analysis.embeddings)])
        first += len(analysis.embeddings)
        clusters[binary.data.sum(axis=1) == 0] = -2  # local speakers never active: no cluster
        count = pipeline.speaker_count(binary, frames, warm_up=(0.0, 0.0))
        if clusters.max() < 0 or np.nanmax(count.data) == 0:
            found.append(([], []))
            continue
        views = []
        for most in (max_speakers, 1):  # overlapping speech kept, then pyannote's exclusive view
            count.data = np.minimum(count.data, most).astype(np.int8)
            annotation = pipeline.to_annotation(pipeline.reconstruct(score, clusters, count), min_duration_on=0.0,
                                                min_duration_off=pipeline.segmentation.min_duration_off)
            own = annotation.crop(Segment(*analysis.own))
            views.append([(segment.start, segment.end, int(k)) for segment, _, k in own.itertracks(yield_label=True)])
        found.append(tuple(views))
    starts: dict[int, float] = {}
    for views in found:
        for start, _, k in views[0]:
            starts[k] = min(start, starts.get(k, start))
    names = {k: f"SPEAKER_{number:02d}" for number, k in enumerate(sorted(starts, key=starts.get))}
    return [tuple([Turn(round(start, 3), round(end, 3), names[k]) for start, end, k in view if k in names]
                  for view in views) for views in found]
