"""Interactive mode: the declared options that carry a question (config.OPTIONS), asked one by one with their
defaults and the same checks as the flags; a stage's questions only when the stage was chosen."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, TypeVar

from config import OPTIONS, RunConfig
from options import Option
from stages import STAGE_OF_OPTION

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


def _yes_no(text: str) -> bool:
    if text.lower() in ("y", "yes"):
        return True
    if text.lower() in ("n", "no"):
        return False
    raise ValueError("answer y or n")


def _parser(option: Option) -> Callable[[str], object]:
    if option.name == "input":
        return _existing_path
    if option.kind == "flag":
        return _yes_no
    if option.kind == "list":
        def parse_list(text: str) -> tuple:
            chosen = tuple(option.convert(item) for item in text.replace(",", " ").split())
            if not chosen:
                raise ValueError(f"choose from {', '.join(option.choices)}")
            return tuple(choice for choice in option.choices if choice in chosen)  # in pipeline order

        return parse_list
    return option.convert


def _shown(value) -> str:
    if isinstance(value, bool):
        return "y" if value else "n"
    if isinstance(value, tuple):
        return " ".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


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


def ask_config(config: RunConfig, asked_input: bool = True, read=input) -> RunConfig | None:
    """The prompt session from `config`'s values as defaults; None when the user cancels (Ctrl-C, end of input,
    or 'n' at the end). asked_input=False: the input was given, its question shows it as the default."""
    from frontends.dry_run import estimate
    from gpu_memory import detect_gpus
    from batch.run import get_optimal_workers

    asked, audio_seconds = [], 0.0
    try:
        for option in OPTIONS.values():
            stage = STAGE_OF_OPTION.get(option.name)
            if (not option.question or (stage and stage.name not in config.steps)
                    or (option.ask_if and not option.ask_if(config))):
                continue
            question, default = option.question, _shown(getattr(config, option.name))
            if option.name == "input" and asked_input:
                default = ""
            elif option.name == "use_gpu":
                cards = detect_gpus()
                print(f"  GPU: {cards[0].name if cards else 'none detected'}")
                default = "y" if cards or config.use_gpu else "n"
            elif option.name == "workers":
                suggested = get_optimal_workers()
                question, default = f"{question} (suggested {suggested})", str(config.workers or suggested)
            config = replace(config, **{option.name: ask(question, default, _parser(option), read)})
            asked.append(option.name)
            if option.name == "input":
                found, audio_seconds = describe_input(config.input)
                print(found)
        print("\nSummary:")
        for name in asked:
            print(f"  {name}: {_shown(getattr(config, name)) if name != 'use_gpu' else getattr(config, name)}")
        print(f"  estimated run time: {estimate(config, audio_seconds)}")
        if not ask("Run now (y/n)", "y", _yes_no, read):
            print("Cancelled.")
            return None
    except Cancelled:
        print("\nCancelled.")
        return None
    return config
