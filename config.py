"""The run's settings: one RunConfig built from the declared options (the general ones here, each stage's own in
its file under stages/), shared by the command line, --config files, the interactive prompt and the workers."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, field, make_dataclass
from pathlib import Path

from audio_io import name_problem, printable_path
from options import Option, fraction, path, positive
from stages import DEFAULT_STEPS, STAGE_ORDER, STAGES

IO, RESOURCES = "input and output", "performance and GPU"
ASR = "speech recognition (word_boundary split, transcribe)"
COMPUTE_TYPES = ("auto", "int8", "float32", "float16", "int8_float16")  # CTranslate2's names


def uses_whisper(config) -> bool:
    return "transcribe" in config.steps or ("split" in config.steps and config.split_method == "word_boundary")


BEFORE_STAGES = (
    Option("input", None, "an audio file, or a folder searched recursively for audio", path, group=IO,
           question="Input file or folder"),
    Option("output", Path("results"), "results folder", path, group=IO, question="Output folder"),
    Option("steps", DEFAULT_STEPS, f"stages to run, always in the order {' '.join(STAGE_ORDER)}", choices=STAGE_ORDER,
           kind="list", group=IO, question=f"Steps (any of {' '.join(STAGE_ORDER)})"),
)
SPEECH_RECOGNITION = (  # shared by the two stages that run Whisper
    Option("whisper_model", "base", "Whisper model name or path (checkpoint .pt or CTranslate2 folder)", group=ASR,
           question="Whisper model (name or path)", ask_if=uses_whisper),
    Option("asr_backend", "faster-whisper", "speech recognition engine", choices=("faster-whisper", "openai-whisper"),
           group=ASR),
    Option("asr_compute_type", "auto", "faster-whisper precision (auto = int8 on CPU, float16 on GPU; see "
           "OPTIMIZATION.md for speed and word differences)", choices=COMPUTE_TYPES, group=ASR),
    Option("language", None, "spoken language code, e.g. en", default_text="detect", group=ASR),
)
AFTER_STAGES = (
    Option("models_dir", None, "local model store", path, group="models",
           default_text="$AUDIO_PROCESSING_MODELS or ~/.cache/audio_processing/models"),
    Option("allow_skip", False, "run even when a requested stage has no model at all: the other stages run, "
           "and each file is marked incomplete (exit status 1)", kind="flag", group="models"),
    Option("profile", None, "preset GPU use, memory limit, batch size and workers (the seed guide's table); auto "
           "picks one from the hardware; options given explicitly override it",
           choices=("auto", "high", "mid", "low", "cpu"), group=RESOURCES),
    Option("use_gpu", False, "use a CUDA GPU when one is available", kind="flag", group=RESOURCES,
           question="Use the GPU (y/n)"),
    Option("gpu_memory_limit", 0.75, "share of the card's memory the run may use", fraction, group=RESOURCES),
    Option("workers", None, "worker processes", positive(int), group=RESOURCES,
           default_text="half the cores, capped by RAM", question="Worker processes"),
    Option("timeout", 7200.0, "seconds one file may take before it is stopped", positive(float), group=RESOURCES),
    Option("backend", "local", "local: worker processes on this machine; ray: Ray actors, on a cluster with "
           "--ray_address (needs requirements-ray.txt)", choices=("local", "ray"), group=RESOURCES),
    Option("ray_address", None, "Ray cluster to join, e.g. auto or ray://head:10001", group=RESOURCES,
           default_text="start one here"),
)
OPTIONS: dict[str, Option] = {option.name: option for option in
                              (*BEFORE_STAGES, *(o for stage in STAGES.values() for o in stage.options),
                               *SPEECH_RECOGNITION, *AFTER_STAGES)}


def _public_dict(self) -> dict:
    """The settings as JSON-friendly values, without secrets (saved with the results)."""
    values = {key: (str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value)
              for key, value in asdict(self).items()}
    for name, option in OPTIONS.items():
        if option.secret:
            values[name] = "***" if values[name] else None
    return values


def _to_toml(self) -> str:
    """The settings as a --config file that repeats this run (secrets and unset values left out)."""
    lines = ["# audio_processing settings; rerun with: python audio_processing.py --config <this file>"]
    for key, value in self.public_dict().items():
        if OPTIONS[key].secret or value is None:
            continue
        if OPTIONS[key].parse is path:
            value = str(Path(value).absolute())  # the file repeats the run from any folder
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


RunConfig = make_dataclass(
    "RunConfig",
    [(option.name, object, field(default=option.default, repr=not option.secret)) for option in OPTIONS.values()],
    namespace={"public_dict": _public_dict, "to_toml": _to_toml,
               "__doc__": "Every option of a run; see OPTIONS for what each one means."})
RunConfig.__module__ = __name__  # so that workers unpickle it from here


def make_config(explicit: dict, profile: tuple[str, dict] | None = None) -> tuple[RunConfig, list[str]]:
    """The run's settings from the options given (command line over --config file): given, else the profile's
    value (profile: its name and the values it sets), else the environment's (for options that name a
    variable), else the default. Also lines for the log: what the profile set, and what it wanted and did not get
    (a profile never silently overrides an option the user gave)."""
    values = {name: option.default for name, option in OPTIONS.items()}
    notes = []
    if profile:
        profile, preset = profile
        notes.append(f"profile {profile}: " + ", ".join(f"{name} = {_shown(value)}" for name, value in preset.items()))
        for name, value in preset.items():
            if name not in explicit:
                values[name] = value
            elif explicit[name] != value:
                notes.append(f"--{name} {_shown(explicit[name])} given: kept over profile {profile}'s "
                             f"{_shown(value)}")
    for name, option in OPTIONS.items():
        if option.env and name not in explicit and os.environ.get(option.env):
            values[name] = os.environ[option.env]
    values.update(explicit)
    values["steps"] = tuple(step for step in STAGE_ORDER if step in values["steps"])
    return RunConfig(**values), notes


def config_problems(config: RunConfig) -> list[str]:
    """What is wrong in a combination of options (each option alone was checked when it was read)."""
    problems = []
    for name in ("input", "output"):  # the manifest, reports and log are UTF-8: so must these paths be
        problem = getattr(config, name) and name_problem(getattr(config, name))
        if problem:
            problems.append(f"--{name} {printable_path(getattr(config, name))}: {problem}")
    if config.input is not None and config.output.resolve() == config.input.resolve():
        problems.append(f"--output {config.output} is the --input folder: the results would be mixed with the "
                        "recordings; choose another folder (a subfolder is fine)")
    if config.output.exists() and not config.output.is_dir():
        problems.append(f"--output {config.output} is a file, not a folder")
    if config.asr_compute_type != "auto" and config.asr_backend != "faster-whisper":
        problems.append("--asr_compute_type applies to faster-whisper; openai-whisper runs float32 on CPU, "
                        "float16 on GPU")
    return problems + [problem for stage in STAGES.values() for problem in stage.check(config)]


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string
