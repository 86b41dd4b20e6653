"""Interactive mode: the same settings as the flags, asked one by one with defaults and checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, TypeVar

from config import STEPS, RunConfig

T = TypeVar("T")


class Cancelled(Exception):
    pass


def ask(question: str, default: str, parse: Callable[[str], T], read=input) -> T:
    """Ask until the answer parses; Enter takes the default."""
    while True:
        try:
            answer = read(f"{question} [{default}]: ").strip()
        except (EOFError, KeyboardInterrupt):
            raise Cancelled from None
        try:
            return parse(answer or default)
        except ValueError as error:
            print(f"  {error}")


def _existing_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    return path


def _steps(text: str) -> tuple[str, ...]:
    chosen = text.replace(",", " ").split()
    unknown = [step for step in chosen if step not in STEPS]
    if unknown or not chosen:
        raise ValueError(f"choose among: {' '.join(STEPS)}")
    return tuple(step for step in STEPS if step in chosen)


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"choose one of: {', '.join(options)}")
        return text

    return parse


def _yes_no(text: str) -> bool:
    if text.lower() in ("y", "yes"):
        return True
    if text.lower() in ("n", "no"):
        return False
    raise ValueError("answer y or n")


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    return parse


def describe_input(path: Path) -> tuple[str, float]:
    """What the input holds, for the user, and its total duration in seconds."""
    from audio_io import AudioError, find_audio_files, probe_audio

    files = find_audio_files(path)
    seconds, unreadable = 0.0, 0
    for file in files:
        try:
            seconds += probe_audio(file).duration
        except AudioError:
            unreadable += 1
    return (f"  found {len(files)} audio file(s), {seconds / 60:.1f} min of audio"
            + (f" ({unreadable} unreadable: they will be reported)" if unreadable else "")), seconds


def ask_config(start: RunConfig | None = None, read=input) -> RunConfig | None:
    """The prompt session; None when the user cancels (Ctrl-C, end of input, or 'n' at the end)."""
    import torch

    from dry_run import estimate
    from runner import get_optimal_workers

    config = start or RunConfig(input=Path("."), output=Path("results"))
    try:
        source = ask("Input file or folder", str(config.input) if start else "", _existing_path, read)
        found, audio_seconds = describe_input(source)
        print(found)
        output = ask("Output folder", str(config.output), Path, read)
        steps = ask("Steps (any of split denoise vad diar)", " ".join(config.steps), _steps, read)
        method, chunk = config.split_method, config.chunk_duration
        if "split" in steps:
            method = ask("Split method (time / word_boundary)", method, _choice("time", "word_boundary"), read)
            chunk = ask("Chunk duration in seconds", f"{chunk:g}", _positive(float), read)
        denoiser = config.denoiser
        if "denoise" in steps:
            denoiser = ask("Denoiser (demucs / deepfilternet)", denoiser, _choice("demucs", "deepfilternet"), read)
        gpu_found = torch.cuda.is_available()
        print(f"  GPU: {torch.cuda.get_device_name(0) if gpu_found else 'none detected'}")
        use_gpu = ask("Use the GPU (y/n)", "y" if gpu_found else "n", _yes_no, read)
        suggested = get_optimal_workers()
        workers = ask(f"Worker processes (suggested {suggested})", str(config.workers or suggested),
                      _positive(int), read)
        whisper_model = config.whisper_model
        if method == "word_boundary":
            whisper_model = ask("Whisper model (name or path)", whisper_model, str, read)
        diarization_model = config.diarization_model
        if "diar" in steps:
            diarization_model = ask("Diarization model (hub name, folder, or offline)", diarization_model, str, read)
        config = replace(config, input=source, output=output, steps=steps, split_method=method,
                         chunk_duration=chunk, denoiser=denoiser, use_gpu=use_gpu, workers=workers,
                         whisper_model=whisper_model, diarization_model=diarization_model)
        print("\nSummary:")
        for key in ("input", "output", "steps", "split_method", "chunk_duration", "denoiser", "use_gpu", "workers",
                    "whisper_model", "diarization_model"):
            value = config.public_dict()[key]
            print(f"  {key}: {' '.join(value) if isinstance(value, list) else value}")
        print(f"  estimated run time: {estimate(config, audio_seconds)}")
        if not ask("Run now (y/n)", "y", _yes_no, read):
            print("Cancelled.")
            return None
    except Cancelled:
        print("\nCancelled.")
        return None
    return config
