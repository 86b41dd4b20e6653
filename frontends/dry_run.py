"""--dry_run: what a run would do (files, durations, parts, outputs) and about how long it would take."""

from __future__ import annotations

from pathlib import Path

from audio_io import AudioError, printable_path, probe_audio
from config import RunConfig
from gpu_memory import usable_cores
from layout import FILE_REPORTS, RUN_NAMES, WORK
from stages import STAGES
from stages.split import Split

MEASURED_CORES = 2  # the stages' real-time factors were measured on a 2-core CPU
STARTUP_SECONDS = 15.0  # a worker importing torch and loading its models, measured here


def stage_rates(config: RunConfig) -> dict[str, float]:
    """Each requested stage's measured real-time factor with these settings."""
    return {step: STAGES[step].real_time_factor(config) for step in config.steps}


def describe_steps(config: RunConfig) -> str:
    return " -> ".join(f"{step} ({STAGES[step].describe(config)})" for step in config.steps)


def planned_parts(config: RunConfig, probe) -> str:
    if "split" not in config.steps:
        return "1 part"
    count = Split.time_parts(config, round(probe.duration * probe.sample_rate), probe.sample_rate)
    return f"{'about ' if config.split_method == 'word_boundary' else ''}{count} part{'s' if count != 1 else ''}"


def planned_outputs(config: RunConfig) -> list[str]:
    """Each requested stage's outputs, as the dry run lists them."""
    outputs = []
    for step in config.steps:
        stage = STAGES[step]
        outputs += [output.pattern() for output in stage.outputs.values() if not output.when or output.when(config)]
        outputs += list(stage.file_outputs)
    return outputs


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:02.0f} min"


def estimate(config: RunConfig, audio_seconds: float) -> str:
    """About how long the run takes on this machine's CPU, and from which measured figures."""
    cores = usable_cores()
    rates = stage_rates(config)
    work = audio_seconds * sum(rates.values()) * MEASURED_CORES / cores  # CPU time scales with the cores
    return (f"about {format_seconds(STARTUP_SECONDS + work)} (real-time factors measured on a {MEASURED_CORES}-core "
            "CPU: " + ", ".join(f"{step} {rate:.3f}" for step, rate in rates.items())
            + ("; a GPU is faster" if config.use_gpu else "") + ")")


def dry_run(config: RunConfig, files: list[Path], models: list[str]) -> int:
    """Print the plan; 0 when every file can be read, 1 otherwise. Nothing is written."""
    from batch.jobs import plan_jobs
    from batch.run import get_optimal_workers

    print("Dry run: nothing is processed or written.")
    if not files:
        print(f"No audio files found in {config.input}")
        return 1
    jobs = plan_jobs(files, config.input)
    total, unreadable = 0.0, 0
    rows = []
    for job in jobs:
        name = printable_path(job.source.relative_to(config.input) if config.input.is_dir() else job.source.name)
        try:
            if job.problem:
                raise AudioError(job.problem)
            probe = probe_audio(job.source)
        except AudioError as problem:
            unreadable += 1
            rows.append(f"  {name}: cannot be processed: {problem}")
            continue
        total += probe.duration
        rows.append(f"  {name}: {probe.duration:.1f} s, {probe.sample_rate} Hz, {probe.channels} ch "
                    f"-> {config.output / job.key}/ ({planned_parts(config, probe)})")
    print(f"Input: {config.input} ({len(jobs)} audio file(s), {total / 60:.1f} min of audio)")
    print("\n".join(rows))
    print(f"Steps: {describe_steps(config)}")
    print("Models:\n" + "\n".join(f"  {line}" for line in models))
    print(f"Outputs per file: {', '.join(planned_outputs(config) + list(FILE_REPORTS))}")
    print(f"Run outputs: {config.output}/{', '.join(name for name in RUN_NAMES if name != WORK)}")
    workers = max(1, min(config.workers or get_optimal_workers(), len(jobs)))
    cores = usable_cores()
    print(f"Workers: {workers}, {max(1, cores // workers)} thread(s) each, on {cores} cores")
    print(f"Estimated run time on the CPU: {estimate(config, total)}")
    if unreadable:
        print(f"{unreadable} file(s) cannot be processed (see above)")
    return 1 if unreadable else 0
