"""--dry_run: what a run would do (files, durations, parts, outputs) and about how long it would take."""

from __future__ import annotations

import math
import os
from pathlib import Path

from audio_io import AudioError, probe_audio
from config import RunConfig

# Seconds of work per second of audio on the whole of a 2-core CPU, from bench/stage_rtf.py (OPTIMIZATION.md).
MEASURED_RTF = {
    ("split", "time"): 0.000, ("split", "faster-whisper"): 0.115, ("split", "openai-whisper"): 0.239,
    ("denoise", "demucs"): 0.540, ("denoise", "deepfilternet"): 0.074,
    ("vad", "silero"): 0.011, ("diar", "pyannote"): 0.216,
}
MEASURED_CORES = 2
STARTUP_SECONDS = 15.0  # a worker importing torch and loading its models, measured here
OUTPUTS = {
    "split": ["parts/part_NNNN.wav"], "denoise": ["denoised/part_NNNN.wav"],
    "vad": ["speech/part_NNNN.wav", "speech/part_NNNN.json"],
    "diar": ["diarization/part_NNNN.rttm", "diarization/part_NNNN.json", "<stem>.rttm"],
}


def stage_rates(config: RunConfig) -> dict[str, float]:
    """Each requested stage's measured real-time factor with these settings."""
    variants = {"split": config.asr_backend if config.split_method == "word_boundary" else "time",
                "denoise": config.denoiser, "vad": "silero", "diar": "pyannote"}
    return {step: MEASURED_RTF[(step, variants[step])] for step in config.steps}


def describe_steps(config: RunConfig) -> str:
    details = {"split": f"{config.split_method}, {config.chunk_duration:g} s"
                        + (f", {config.asr_backend} {config.whisper_model}"
                           if config.split_method == "word_boundary" else ""),
               "denoise": config.denoiser, "vad": f"silero, threshold {config.vad_threshold:g}",
               "diar": config.diarization_model}
    return " -> ".join(f"{step} ({details[step]})" for step in config.steps)


def planned_parts(config: RunConfig, duration: float) -> str:
    if "split" not in config.steps:
        return "1 part"
    count = max(1, math.ceil(duration / config.chunk_duration - 1e-9))
    return f"{'about ' if config.split_method == 'word_boundary' else ''}{count} part{'s' if count != 1 else ''}"


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:02.0f} min"


def estimate(config: RunConfig, audio_seconds: float) -> str:
    """About how long the run takes on this machine's CPU, and from which measured figures."""
    cores = os.cpu_count() or 1
    rates = stage_rates(config)
    work = audio_seconds * sum(rates.values()) * MEASURED_CORES / cores  # CPU time scales with the cores
    return (f"about {format_seconds(STARTUP_SECONDS + work)} (real-time factors measured on a {MEASURED_CORES}-core "
            "CPU: " + ", ".join(f"{step} {rate:.3f}" for step, rate in rates.items())
            + ("; a GPU is faster" if config.use_gpu else "") + ")")


def dry_run(config: RunConfig, files: list[Path]) -> int:
    """Print the plan; 0 when every file can be read, 1 otherwise. Nothing is written."""
    from pipeline import plan_jobs
    from runner import get_optimal_workers

    print("Dry run: nothing is processed or written.")
    if not files:
        print(f"No audio files found in {config.input}")
        return 1
    jobs = plan_jobs(files, config.input)
    total, unreadable = 0.0, 0
    rows = []
    for job in jobs:
        name = job.source.relative_to(config.input).as_posix() if config.input.is_dir() else job.source.name
        try:
            probe = probe_audio(job.source)
        except AudioError as problem:
            unreadable += 1
            rows.append(f"  {name}: cannot be processed: {problem}")
            continue
        total += probe.duration
        rows.append(f"  {name}: {probe.duration:.1f} s, {probe.sample_rate} Hz, {probe.channels} ch "
                    f"-> {config.output / job.key}/ ({planned_parts(config, probe.duration)})")
    print(f"Input: {config.input} ({len(jobs)} audio file(s), {total / 60:.1f} min of audio)")
    print("\n".join(rows))
    print(f"Steps: {describe_steps(config)}")
    outputs = [path for step in config.steps for path in OUTPUTS[step]]
    if "split" in config.steps and config.split_method == "word_boundary":
        outputs.insert(1, "transcripts/part_NNNN.json")  # the words of each part
    print(f"Outputs per file: {', '.join(outputs + ['timeline.png', 'report.txt', 'report.json'])}")
    print(f"Run outputs: {config.output}/manifest.jsonl, summary.json, report.html, config.toml, "
          "audio_processing.log")
    workers = max(1, min(config.workers or get_optimal_workers(), len(jobs)))
    cores = os.cpu_count() or 1
    print(f"Workers: {workers}, {max(1, cores // workers)} thread(s) each, on {cores} cores")
    print(f"Estimated run time on the CPU: {estimate(config, total)}")
    if unreadable:
        print(f"{unreadable} file(s) cannot be processed (see above)")
    return 1 if unreadable else 0
