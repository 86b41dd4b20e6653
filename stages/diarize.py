"""diar: pyannote.audio speaker diarization, written as RTTM on the original file's timeline.

Each part is diarized on its own (bounded memory), which restarts the labels: SPEAKER_00 of one part is not
SPEAKER_00 of the next. When the file is done, the parts' speakers are linked by clustering their centroid
embeddings (two speakers of one part are never merged), and every RTTM is written with the file's labels.
Diarization reads the part's audio before silence removal: the pauses between turns help find speaker changes.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from audio_io import write_json, write_text
from model_manager import OFFLINE_DIARIZATION, ModelUnavailable
from options import Option, fraction, positive
from stages.base import MODEL_SAMPLE_RATE, FileContext, Output, Part, Stage, one_thread_on_cpu

LINK_THRESHOLD = 0.6  # cosine similarity of centroids above which two parts' speakers are one person
MIN_SPEAKER_SECONDS = 2.0  # a speaker with less speech than this in a file-wide cluster is not trusted alone


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
        Option("embedding_batch_size", 32, "offline pipeline: speaker embeddings per batch", positive(int)),
    )
    outputs = {"diarization": Output("diarization", ".rttm"), "speaker_embeddings": Output("diarization", ".json")}
    file_outputs = ("<stem>.rttm",)
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
        return {"model": config.diarization_model, "num_speakers": config.num_speakers,
                "min_speakers": config.min_speakers, "max_speakers": config.max_speakers,
                "clustering_threshold": config.clustering_threshold, "min_cluster_size": config.min_cluster_size,
                "segmentation_step": config.segmentation_step}

    def restore(self, part: Part, record: dict, ctx: FileContext) -> None:
        super().restore(part, record, ctx)
        saved = json.loads((ctx.output_root / record["outputs"]["speaker_embeddings"]).read_text(encoding="utf-8"))
        part.fields["diarization"] = {"labels": saved["labels"], "turns": [Turn(*turn) for turn in saved["turns"]],
                                      "centroids": None if saved["centroids"] is None
                                      else np.asarray(saved["centroids"], dtype=float)}
        ctx.stage_info[self.name]["model"] = saved["model"]

    def run(self, part: Part, ctx: FileContext) -> Iterator[Part]:
        name = self._pipeline_name(ctx)
        if name is None:
            yield part
            return
        waveform = part.mono_16k()
        speakers = self._speaker_counts(ctx)

        def diarize(device: str, reduced: bool):
            pipeline = self.models.get_diarization_pipeline(name, device=device, **self._params(name))
            with smaller_batches(pipeline, reduced), one_thread_on_cpu(device):
                output = pipeline({"waveform": waveform[None], "sample_rate": MODEL_SAMPLE_RATE}, **speakers)
            return getattr(output, "speaker_diarization", output), getattr(output, "speaker_embeddings", None)

        annotation, centroids = self.models.gpu.run_with_fallback(diarize, "diarization", on_fallback=ctx.note)
        labels = list(annotation.labels())
        turns = [Turn(round(part.offset + seg.start, 3), round(part.offset + seg.end, 3), label)
                 for seg, _track, label in annotation.itertracks(yield_label=True)]
        part._cache.pop("mono_16k", None)
        part.fields["speakers"] = len(labels)
        centroids = None if centroids is None else np.asarray(centroids)
        part.fields["diarization"] = {"labels": labels, "turns": turns, "centroids": centroids}
        # The part's own speakers and their embeddings: finish() links them across parts, also on a resumed run.
        saved = self.output_path(ctx, "speaker_embeddings", part)
        write_json(saved, {"model": name, "labels": labels, "turns": [[t.start, t.end, t.speaker] for t in turns],
                           "centroids": None if centroids is None else centroids.tolist()})
        part.outputs["speaker_embeddings"] = ctx.relative(saved)
        path = self.output_path(ctx, "diarization", part)
        write_text(path, rttm(ctx.file_id, turns))  # part-local labels until finish() links them
        part.outputs["diarization"] = ctx.relative(path)
        yield part

    def finish(self, ctx: FileContext) -> None:
        parts = [part for part in ctx.parts if "diarization" in part.fields]
        if not parts:
            return
        groups = link_speakers([part.fields["diarization"] for part in parts], LINK_THRESHOLD,
                               self.config.num_speakers or self.config.max_speakers)
        all_turns = []
        for part, mapping in zip(parts, groups):
            turns = [Turn(t.start, t.end, mapping[t.speaker]) for t in part.fields["diarization"]["turns"]]
            write_text(ctx.output_root / part.outputs["diarization"], rttm(ctx.file_id, turns))
            all_turns.extend(turns)
        path = ctx.whole_file_path(self.file_outputs[0])
        write_text(path, rttm(ctx.file_id, sorted(all_turns, key=lambda t: (t.start, t.end))))
        ctx.stage_info[self.name].update(rttm=ctx.relative(path), speakers=len({t.speaker for t in all_turns}))

    def _pipeline_name(self, ctx: FileContext) -> str | None:
        """The pipeline asked for, or the offline one when that cannot load; None when neither can."""
        wanted = self.config.diarization_model
        problems = []
        for name in dict.fromkeys([wanted, OFFLINE_DIARIZATION]):
            try:
                self.models.get_diarization_pipeline(name, **self._params(name))
            except ModelUnavailable as error:
                problems.append(str(error))
                continue
            if problems:
                ctx.fallback(self.name, f"the {OFFLINE_DIARIZATION} pipeline", wanted, problems[0])
            ctx.stage_info.setdefault(self.name, {}).setdefault("model", name)
            return name
        ctx.skip(self.name, "; ".join(problems))
        return None

    def _params(self, name: str) -> dict:
        if name != OFFLINE_DIARIZATION:
            return {}  # hub and folder pipelines come with their own tuned parameters
        return {"segmentation_step": self.config.segmentation_step, "threshold": self.config.clustering_threshold,
                "min_cluster_size": self.config.min_cluster_size,
                "embedding_batch_size": self.config.embedding_batch_size}

    def _speaker_counts(self, ctx: FileContext) -> dict:
        config = self.config
        whole_file = "split" not in config.steps
        counts = {"num_speakers": config.num_speakers if whole_file else None,
                  "min_speakers": config.min_speakers if whole_file else None,
                  # a part may hold fewer speakers than the file, never more
                  "max_speakers": config.max_speakers or (None if whole_file else config.num_speakers)}
        return {key: value for key, value in counts.items() if value}


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


def link_speakers(parts: list[dict], threshold: float, max_speakers: int | None = None,
                  min_seconds: float = MIN_SPEAKER_SECONDS) -> list[dict[str, str]]:
    """Map each part's local labels to file-wide ones by average-linkage clustering of the centroids.

    Clusters merge while their mean centroids have cosine similarity >= threshold (and beyond it while there are
    more than max_speakers), but never two clusters holding speakers of the same part: that part's diarization
    already told them apart. A speaker heard for less than min_seconds has too few embeddings for a reliable
    centroid: it joins its closest compatible cluster, as pyannote does with its small clusters (pyannote gives
    no centroid at all for a speaker with too little speech: then it joins the only compatible one, if one).
    """
    clusters = []  # each: {"members": [(part, label)], "vector": mean unit centroid or None, "seconds": speech}
    for index, info in enumerate(parts):
        centroids = info["centroids"]
        for k, label in enumerate(info["labels"]):
            vector = None if centroids is None or k >= len(centroids) else np.asarray(centroids[k], dtype=float)
            usable = vector is not None and np.all(np.isfinite(vector)) and np.linalg.norm(vector) > 0
            seconds = sum(t.end - t.start for t in info["turns"] if t.speaker == label)
            clusters.append({"members": [(index, label)], "vector": vector / np.linalg.norm(vector) if usable
                             else None, "seconds": seconds})

    def compatible(a: dict, b: dict) -> bool:
        return not {i for i, _ in a["members"]} & {i for i, _ in b["members"]}

    def similarity(a: dict, b: dict) -> float | None:
        if a["vector"] is None or b["vector"] is None or not compatible(a, b):
            return None
        return float(a["vector"] @ b["vector"] / (np.linalg.norm(a["vector"]) * np.linalg.norm(b["vector"])))

    def merge(a: dict, b: dict) -> None:
        weight_a, weight_b = len(a["members"]), len(b["members"])
        if a["vector"] is None or b["vector"] is None:
            a["vector"] = a["vector"] if b["vector"] is None else b["vector"]
        else:
            a["vector"] = (a["vector"] * weight_a + b["vector"] * weight_b) / (weight_a + weight_b)
        a["members"] += b["members"]
        a["seconds"] += b["seconds"]
        clusters.remove(b)

    while True:
        pairs = [(similarity(a, b), i, j) for i, a in enumerate(clusters) for j, b in enumerate(clusters) if i < j]
        pairs = [pair for pair in pairs if pair[0] is not None]
        if not pairs:
            break
        best, i, j = max(pairs)
        if best < threshold and not (max_speakers and len(clusters) > max_speakers):
            break
        merge(clusters[i], clusters[j])
    for small in sorted((c for c in clusters if c["seconds"] < min_seconds), key=lambda c: c["seconds"]):
        others = [c for c in clusters if c is not small and c["seconds"] >= min_seconds and compatible(small, c)]
        scored = [(similarity(small, other), index) for index, other in enumerate(others)]
        scored = [pair for pair in scored if pair[0] is not None]
        if scored:
            merge(others[max(scored)[1]], small)
        elif len(others) == 1:  # no embedding (too little speech), but only one speaker it can be
            merge(others[0], small)
    # Number the file's speakers by first appearance.
    order = sorted(clusters, key=lambda c: min(c["members"]))
    mappings: list[dict[str, str]] = [{} for _ in parts]
    for number, cluster in enumerate(order):
        for index, label in cluster["members"]:
            mappings[index][label] = f"SPEAKER_{number:02d}"
    return mappings
