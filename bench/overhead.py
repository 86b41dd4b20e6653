"""Overhead: the whole pipeline on one file against the bare library calls it is built on, on the same audio with
the same models and thread count.

    .venv/bin/python bench/overhead.py [--runs 3] [--seconds 120] [--models_dir .models]

Both sides are fresh processes timed from start to end, imports and model loading included. The tool: one worker
(two torch threads), word-boundary split (faster-whisper base int8), Demucs (htdemucs architecture, untrained
weights: same compute, see stage_rtf.py), Silero VAD, offline pyannote diarization; writing every output, the
manifest, the reports and the timeline. The bare calls: faster-whisper `transcribe(word_timestamps=True)`,
demucs `apply_model`, silero `get_speech_timestamps`, the pyannote pipeline, each on the whole file, nothing
written.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import ROOT, Row, measured_run, scenario_main, tool_command, write_speech

THREADS = 2


def tool_args(demucs_repo: Path, chunk_seconds: float) -> list[str]:
    return ["--workers", "1", "--split_method", "word_boundary", "--chunk_duration", f"{chunk_seconds:g}",
            "--language", "en", "--demucs_model", str(demucs_repo), "--diarization_model", "offline", "--overwrite"]


def bare_calls(audio_path: Path, demucs_repo: Path, models_dir: Path, timings: Path) -> None:
    """Each library called once on the whole file; seconds per library (loading included) to `timings`."""
    begun = time.monotonic()
    import soundfile as sf
    import torch

    torch.set_num_threads(THREADS)
    seconds = {"imports": time.monotonic() - begun}

    def timed(name, work):
        start = time.monotonic()
        work()
        seconds[name] = time.monotonic() - start

    audio, rate = sf.read(audio_path, dtype="float32")
    waveform = torch.from_numpy(audio)

    def whisper():
        from faster_whisper import WhisperModel

        model = WhisperModel(str(models_dir / "whisper" / "base-ct2"), device="cpu", compute_type="int8",
                             cpu_threads=THREADS)
        segments, _ = model.transcribe(audio, language="en", word_timestamps=True)
        list(segments)

    def demucs():
        from demucs.apply import apply_model
        from demucs.audio import convert_audio
        from demucs.pretrained import get_model

        model = get_model(next(demucs_repo.glob("*.th")).stem, repo=demucs_repo).eval()
        mix = convert_audio(waveform[None], rate, model.samplerate, model.audio_channels)[None]
        with torch.inference_mode():
            apply_model(model, (mix - mix.mean()) / mix.std(), shifts=0, split=True, overlap=0.25, progress=False)

    def silero():
        from silero_vad import get_speech_timestamps, load_silero_vad

        model = load_silero_vad(onnx=False)
        torch.set_num_threads(THREADS)  # importing silero_vad sets one thread for the process
        get_speech_timestamps(waveform, model, sampling_rate=rate)

    def pyannote():
        sys.path.insert(0, str(ROOT))
        from loaders.speaker_embedding import build_offline_pipeline

        pipeline = build_offline_pipeline(models_dir / "pyannote" / "segmentation-3.0" / "pytorch_model.bin",
                                          models_dir / "speaker" / "campplus_cn_en_common.pt")
        pipeline({"waveform": waveform[None], "sample_rate": rate})

    for name, work in (("whisper", whisper), ("demucs", demucs), ("silero", silero), ("pyannote", pyannote)):
        timed(name, work)
    timings.write_text(json.dumps(seconds))


def make_demucs_repo(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "bench"))
    from stage_rtf import make_demucs_repo as make

    folder.mkdir(parents=True, exist_ok=True)
    return make(folder)


def measure(work: Path, models_dir: Path, runs: int = 3, seconds: float = 120.0) -> list[Row]:
    shutil.rmtree(work, ignore_errors=True)
    models_dir = models_dir.resolve()
    env = {"AUDIO_PROCESSING_MODELS": str(models_dir), "OMP_NUM_THREADS": str(THREADS)}
    source = write_speech(work / "in" / "speech.flac", seconds)
    demucs_repo = make_demucs_repo(work / "demucs")
    tool = tool_command(source, work / "out", *tool_args(demucs_repo, seconds / 2), "--models_dir", str(models_dir))
    bare = [sys.executable, __file__, "--bare", str(source), str(demucs_repo), str(models_dir), str(work / "bare.json")]
    tool_times, bare_times, parts = [], [], []
    for _ in range(runs):  # interleaved, so a noisy moment does not favour one side
        bare_times.append(measured_run(bare, env).seconds)
        parts.append(json.loads((work / "bare.json").read_text()))
        tool_times.append(measured_run(tool, env).seconds)
        stages = json.loads((work / "out" / "speech" / "report.json").read_text())["stages"]
        print(f"bare {bare_times[-1]:.1f} s {({k: round(v, 1) for k, v in parts[-1].items()})}; tool "
              f"{tool_times[-1]:.1f} s {({k: round(v['seconds'], 1) for k, v in stages.items()})}", flush=True)
    tool_median, bare_median = statistics.median(tool_times), statistics.median(bare_times)
    ratio = tool_median / bare_median
    return [Row(f"1. overhead: pipeline / bare library calls, one {seconds:g} s file, all four stages", "<= 1.10",
                f"{tool_median:.1f} / {bare_median:.1f} s", ratio, ratio <= 1.10)]


def main() -> None:
    if sys.argv[1:2] == ["--bare"]:
        source, demucs_repo, models_dir, timings = map(Path, sys.argv[2:6])
        bare_calls(source, demucs_repo, models_dir, timings)
        return
    scenario_main(__doc__, Path("/tmp/overhead"), measure)


if __name__ == "__main__":
    main()
