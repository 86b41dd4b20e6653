"""--config files, --print_config, the configuration saved with the results, and --dry_run."""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest

from conftest import data, data_glob, run_cli, run_main

CLIPS = data_glob("librivox/*.flac")
SAMPLE = data("pyannote_sample/sample.flac")


def test_config_file_sets_options_and_flags_override_it(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('steps = ["vad", "split"]\nchunk_duration = 60\nvad_threshold = 0.6\n'
                      f'input = "{CLIPS[0]}"\nuse_gpu = false\ndiarization_model = "offline"\n')
    code, stdout, stderr = run_main(capsys, "--config", config, "--chunk_duration", "12", "--print_config")
    assert code == 0, stderr
    effective = tomllib.loads(stdout)
    assert effective["chunk_duration"] == 12.0  # the flag wins over the file
    assert effective["vad_threshold"] == 0.6 and effective["diarization_model"] == "offline"
    assert effective["steps"] == ["split", "vad"]  # pipeline order, whatever order the file gave
    assert effective["input"] == str(CLIPS[0]) and "hf_token" not in effective


@pytest.mark.parametrize("content, message", [
    ("bogus = 1\n", "unknown option 'bogus'"),
    ('chunk_duration = "long"\n', "chunk_duration = 'long'"),
    ("chunk_duration = -3\n", "must be greater than 0"),
    ('steps = ["split", "translate"]\n', "choose from split, denoise, vad, diar, transcribe, utterances"),
    ('steps = "split"\n', "must be a list"),
    ("use_gpu = 1\n", "must be true or false"),
    ("chunk_duration = [1, 2\n", "not valid TOML"),
])
def test_a_bad_config_file_is_a_usage_error_naming_it(tmp_path, capsys, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    code, _, stderr = run_main(capsys, "--config", config, "--input", CLIPS[0], "--output", tmp_path / "out")
    assert code == 2 and message in stderr and str(config) in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_the_saved_configuration_repeats_the_run(tmp_path, models_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    for clip in CLIPS[:2]:
        shutil.copy(clip, folder)
    output = tmp_path / "out"
    env = {"AUDIO_PROCESSING_MODELS": str(models_dir)}
    first = run_cli("--input", folder, "--output", output, "--steps", "split", "vad", "--chunk_duration", "1.5",
                    "--vad_threshold", "0.55", "--workers", "1", **env)
    assert first.returncode == 0, first.stderr
    saved = output / "config.toml"
    assert tomllib.loads(saved.read_text())["vad_threshold"] == 0.55
    again = run_cli("--config", saved, **env)  # nothing else given: same settings, so nothing to redo
    assert again.returncode == 0, again.stderr
    assert json.loads((output / "summary.json").read_text())["files_skipped"] == 2


def test_dry_run_shows_the_plan_and_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE, folder)
    shutil.copy(CLIPS[0], folder / "clip.flac")
    (folder / "notes.wav").write_text("not audio")
    output = tmp_path / "out"
    code, stdout, _ = run_main(capsys, "--input", folder, "--output", output, "--chunk_duration", "10", "--steps",
                               "split", "vad", "diar", "--dry_run")
    assert code == 1  # one input cannot be processed; the run would say so too
    lines = stdout.splitlines()
    assert any(line.startswith("  sample.flac: 30.0 s, 16000 Hz, 1 ch") and "(3 parts)" in line for line in lines)
    assert any(line.startswith("  clip.flac: 7.1 s") and "(1 part)" in line for line in lines)
    assert any(line.startswith("  notes.wav: cannot be processed") for line in lines)
    assert "Input: " in stdout and "3 audio file(s), 0.6 min of audio" in stdout
    assert "Steps: split (time, 10 s) -> vad (silero, threshold 0.5) -> diar" in stdout
    estimate = next(line for line in lines if line.startswith("Estimated run time"))
    assert "split 0.000, vad 0.011, diar 0.216" in estimate
    assert not output.exists()
