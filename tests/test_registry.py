"""The stage registry: a stage declared in one file shows up everywhere stages and options are listed.

The stage here is defined by the test itself and reaches the tool the way a third-party package's would, through
the "audio_processing.stages" entry point; no file of the project is touched."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import data, run_cli

pytestmark = pytest.mark.e2e  # every test here starts the tool as a process

GAIN_STAGE = '''
from audio_io import AudioWriter, open_audio
from options import Option
from stages.base import Output, Stage


class Gain(Stage):
    """Scales the audio: the smallest stage that changes audio, writes a file per part and sets a field."""

    name = "gain"
    after = "split"
    summary = "scale the audio by a fixed gain"
    options = (Option("gain_db", -6.0, "gain in decibels", float, question="Gain in dB"),)
    outputs = {"gain": Output("gained", ".wav")}
    manifest_fields = ("gain_db",)
    changes_audio = True

    @classmethod
    def describe(cls, config):
        return f"{config.gain_db:g} dB"

    @classmethod
    def real_time_factor(cls, config):
        return 0.001

    @staticmethod
    def settings(config):
        return {"gain_db": config.gain_db}

    def run(self, part, ctx):
        path = self.output_path(ctx, "gain", part)
        with AudioWriter(path, part.sample_rate, part.channels, "FLOAT") as writer:
            writer.write(part.read("float32") * 10 ** (self.config.gain_db / 20))
        part.set_audio(open_audio(path, ctx.scratch_dir))
        part.outputs["gain"] = ctx.relative(path)
        part.fields["gain_db"] = self.config.gain_db
        yield part
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> dict:
    """A folder holding the stage's module and the package metadata that names it: on PYTHONPATH, it is
    installed as far as importlib.metadata can tell."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "gain_stage.py").write_text(GAIN_STAGE)
    info = folder / "gain_stage-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gain-stage\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[audio_processing.stages]\ngain = gain_stage:Gain\n")
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


def test_the_stage_is_in_the_help_the_steps_and_the_config(plugin, tmp_path):
    help_text = run_cli("--help", **plugin).stdout
    assert "gain: scale the audio by a fixed gain:" in help_text
    assert "--gain_db GAIN_DB" in help_text and "gain in decibels (default: -6)" in help_text
    assert "{split,gain,denoise,vad,diar,transcribe,utterances}" in help_text  # after split, as it asks

    config_file = tmp_path / "run.toml"
    config_file.write_text(f'input = "{data("jfk/jfk.flac")}"\nsteps = ["vad", "gain", "split"]\ngain_db = -3\n')
    printed = run_cli("--config", config_file, "--print_config", **plugin)
    assert printed.returncode == 0, printed.stderr
    settings = tomllib.loads(printed.stdout)
    assert settings["steps"] == ["split", "gain", "vad"] and settings["gain_db"] == -3.0

    bad = run_cli("--config", config_file, "--gain_db", "loud", **plugin)
    assert bad.returncode == 2 and "argument --gain_db: could not convert string to float: 'loud'" in bad.stderr

    without = run_cli("--input", data("jfk/jfk.flac"), "--steps", "gain")
    assert without.returncode == 2 and "invalid choice" in without.stderr  # not installed: not a stage


def test_the_stage_is_in_the_dry_run_and_the_interactive_prompt(plugin, tmp_path):
    planned = run_cli("--input", data("jfk/jfk.flac"), "--output", tmp_path / "out", "--steps", "split", "gain",
                      "--chunk_duration", "4", "--gain_db", "-3", "--dry_run", **plugin)
    assert planned.returncode == 0, planned.stderr
    assert "Steps: split (time, 4 s) -> gain (-3 dB)" in planned.stdout
    assert "Outputs per file: parts/part_NNNN.wav, gained/part_NNNN.wav, report.json" in planned.stdout
    assert "split 0.000, gain 0.001)" in planned.stdout

    answers = "\n".join([str(data("jfk/jfk.flac")), str(tmp_path / "asked"), "gain", "-12", "n", "1", "n"]) + "\n"
    asked = run_cli("--interactive", input=answers, **plugin)
    assert asked.returncode == 1 and "Gain in dB [-6]: " in asked.stdout and "  gain_db: -12" in asked.stdout


def test_the_stage_runs_and_its_outputs_reach_the_manifest_and_the_reports(plugin, tmp_path, models_dir):
    source = data("jfk/jfk.flac")
    output = tmp_path / "out"
    result = run_cli("--input", source, "--output", output, "--steps", "split", "gain", "--chunk_duration", "4",
                     "--gain_db", "-6", "--workers", "1", AUDIO_PROCESSING_MODELS=str(models_dir), **plugin)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(record["gain_db"] == -6.0 for record in records)
    original, rate = sf.read(source, dtype="float32", always_2d=True)
    for record in records:
        gained, _ = sf.read(output / record["outputs"]["gain"], dtype="float32", always_2d=True)
        expected = original[record["start_frame"]:record["start_frame"] + record["frames"]] * 10 ** (-6 / 20)
        assert np.allclose(gained, expected, atol=1e-6)
    report = json.loads((output / "jfk" / "report.json").read_text())
    assert report["status"] == "done" and "gain" in report["stages"]
    assert "  gain: " in (output / "jfk" / "report.txt").read_text()
    assert "gain" in json.loads((output / "summary.json").read_text())["stage_seconds"]
    assert "gain" in Path(output / "report.html").read_text()
