"""Diarization against where the file was cut: DER, speaker counts and time, unsplit and split, per recording.

    .venv/bin/python bench/diar_split.py [--jobs 2] [--only conv]

Recordings: the multi-speaker ones with references (pyannote sample, falcon, sample + falcon + sample) and the
generated conversations of real voices (bench/conversations.py: 5-14 minutes, 3-8 speakers). Runs, each with
the offline pipeline and its defaults, in this process (what a worker does):
  plain      pyannote's pipeline called on the whole file (the reference for "unsplit")
  unsplit    the tool without split
  time 60    time split at 60 s (and at 60 s with margins 0 and 5 s: how much context is enough)
  time 300   time split at 300 s
  words 60   word-boundary split at 60 s (faster-whisper base)
DER in % without collar / with a 0.25 s collar each side; seconds = the diar stage's own time (one thread).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

RUNS = {  # name -> options of the run (None: the plain pipeline)
    "plain": None,
    "unsplit": dict(steps=("diar",)),
    "time 60": dict(steps=("split", "diar"), chunk_duration=60.0),
    "time 60 m0": dict(steps=("split", "diar"), chunk_duration=60.0, diarization_margin=0.0),
    "time 60 m5": dict(steps=("split", "diar"), chunk_duration=60.0, diarization_margin=5.0),
    "time 300": dict(steps=("split", "diar"), chunk_duration=300.0),
    "words 60": dict(steps=("split", "diar"), chunk_duration=60.0, split_method="word_boundary"),
}


def recordings(work: Path) -> list[tuple[Path, Path]]:
    """(audio, reference RTTM) of every multi-speaker recording measured."""
    from conversations import default_conversations
    from quality import joined_recording
    from sample_data import companion, resolve

    real = [resolve("pyannote_sample/sample.flac"), resolve("falcon/test.flac")]
    joined = joined_recording(work)
    return ([(path, companion(path, ".rttm")) for path in real] + [(joined, joined.with_suffix(".rttm"))]
            + [(c.audio, c.rttm) for c in default_conversations(work / "conversations")])


DEFAULTS = dict(segmentation_step=0.2, threshold=0.8, min_cluster_size=4, embedding_batch_size=32)


@functools.cache
def worker_models():
    """One ModelManager per bench process, its diarization pipeline loaded before anything is timed."""
    from gpu_memory import GPUMemoryManager
    from loaders.model_store import disable_downloads_when_offline
    from model_manager import OFFLINE_DIARIZATION, ModelManager

    disable_downloads_when_offline()
    models = ModelManager(GPUMemoryManager(use_gpu=False), cpu_threads=1, language="en")
    models.get_diarization_pipeline(OFFLINE_DIARIZATION, **DEFAULTS)
    return models


def measure(task: tuple[Path, Path, str, Path]) -> str:
    audio, reference, run, work = task
    import soundfile as sf
    import torch

    torch.set_num_threads(1)
    from batch.jobs import FileJob
    from batch.pipeline import process_file
    from config import RunConfig
    from conftest import der, part_collector
    from model_manager import OFFLINE_DIARIZATION
    from stages.diarize import Turn, rttm

    models = worker_models()
    output = work / f"{audio.stem}-{run.replace(' ', '_')}"
    if RUNS[run] is None:
        pipeline = models.get_diarization_pipeline(OFFLINE_DIARIZATION, **DEFAULTS)
        samples, rate = sf.read(audio, dtype="float32", always_2d=True)
        assert rate == 16000, audio
        started = time.perf_counter()
        with torch.inference_mode():
            found = pipeline({"waveform": torch.from_numpy(samples.mean(axis=1))[None], "sample_rate": rate})
        seconds, parts = time.perf_counter() - started, 1
        hypothesis = output / f"{audio.stem}.rttm"
        output.mkdir(parents=True, exist_ok=True)
        hypothesis.write_text(rttm(audio.stem, [Turn(s.start, s.end, k) for s, _, k in
                                                 found.speaker_diarization.itertracks(yield_label=True)]))
    else:
        config = RunConfig(input=audio, output=output, diarization_model=OFFLINE_DIARIZATION, **RUNS[run])
        report = process_file(FileJob(0, audio, audio.stem), config, models, part_collector([]))
        assert report["status"] == "done", report
        seconds, parts = report["stages"]["diar"]["seconds"], report["parts"]
        hypothesis = output / audio.stem / f"{audio.stem}.rttm"
    speakers = len({line.split()[7] for line in hypothesis.read_text().splitlines()})
    expected = len({line.split()[7] for line in reference.read_text().splitlines()})
    duration = sf.info(audio).duration
    return (f"| {audio.stem} ({duration / 60:.1f} min) | {run} | {parts} | {100 * der(reference, hypothesis):.2f} / "
            f"{100 * der(reference, hypothesis, 0.5):.2f} | {speakers}/{expected} | {seconds:.1f} |")


def clustering_cost(work: Path, hours: float = 3.0) -> str:
    """What the file's one clustering costs on a long file: the parts of the longest conversation's 60 s split,
    repeated along the timeline until `hours`; the stored analyses' size, the clustering's time and peak memory."""
    import dataclasses
    import resource

    import numpy as np

    from model_manager import OFFLINE_DIARIZATION
    from stages.diarize import Analysis, cluster_analyses

    folder = max(work.glob("*-time_60"), key=lambda f: sum(p.stat().st_size for p in f.rglob("*.npz")))
    stored = sorted(folder.rglob("*.npz"))
    parts = []
    for path in stored:
        with np.load(path) as saved:
            parts.append(Analysis.from_arrays(saved))
    span = max(part.own[1] for part in parts)
    copies = int(np.ceil(hours * 3600 / span))

    def shifted(part: Analysis, by: float) -> Analysis:
        return dataclasses.replace(part, chunk_start=part.chunk_start + by, own=(part.own[0] + by, part.own[1] + by),
                                   heard=(part.heard[0] + by, part.heard[1] + by))

    long_file = [shifted(part, copy * span) for copy in range(copies) for part in parts]
    pipeline = worker_models().get_diarization_pipeline(OFFLINE_DIARIZATION, **DEFAULTS)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    labelled = cluster_analyses(pipeline, long_file)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = sum(path.stat().st_size for path in stored) * copies
    speakers = len({turn.speaker for turns, _ in labelled for turn in turns})
    return (f"one clustering of a {copies * span / 3600:.1f} h file ({len(long_file)} parts of 60 s, "
            f"{sum(len(p.embeddings) for p in long_file)} chunks): stored analyses {size / 1e6:.1f} MB, "
            f"{seconds:.1f} s, peak RSS {peak / 1024:.0f} MB (before it {before / 1024:.0f} MB), {speakers} speakers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each on one thread)")
    parser.add_argument("--only", nargs="+", default=[""], help="only recordings whose name contains one of these")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="diar-split-"))
    tasks = [(audio, reference, run, work) for audio, reference in recordings(work)
             if any(part in audio.stem for part in args.only) for run in args.runs]
    print("| recording | run | parts | DER % (collar 0 / 0.25 s) | speakers found/reference | diar seconds |")
    print("|---|---|---|---|---|---|")
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(measure, tasks):
            print(row, flush=True)
    if "time 60" in args.runs:
        with ProcessPoolExecutor(1) as pool:  # a fresh process: its peak memory is the clustering's
            print(pool.submit(clustering_cost, work).result())


if __name__ == "__main__":
    main()
