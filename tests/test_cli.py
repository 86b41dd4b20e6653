"""The tool as users run it: real processes, real workers, the seed guide's examples, bad input and bad flags."""

from __future__ import annotations

import json
import shutil
import subprocess
from html import escape
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import data, data_glob, leftovers, read_rttm, run_cli, run_main
from gpu_memory import detect_gpus

CLIPS = data_glob("librivox/*.flac")


def manifest(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.e2e
def test_corrupt_files_are_reported_and_the_others_finish(tmp_path, models_dir):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(CLIPS[0], folder / "good one.flac")
    shutil.copy(CLIPS[1], folder / "sub" / "good_two.flac")
    (folder / "notes.wav").write_text("this is a text file, not audio\n")
    (folder / "empty.mp3").write_bytes(b"")
    (folder / "truncated.flac").write_bytes(CLIPS[2].read_bytes()[:6000])
    output = tmp_path / "out"
    result = run_cli("--input", folder, "--output", output, "--steps", "split", "vad", "--chunk_duration", "2",
                     "--workers", "2", AUDIO_PROCESSING_MODELS=str(models_dir))
    assert result.returncode == 1, result.stderr
    summary = json.loads((output / "summary.json").read_text())
    assert summary["files_processed"] == 2 and summary["files_failed"] == 3
    failures = {Path(f["source"]).name: f["error"] for f in summary["failures"]}
    assert set(failures) == {"notes.wav", "empty.mp3", "truncated.flac"}
    assert "empty file" in failures["empty.mp3"]
    assert "not an audio file, or damaged" in failures["notes.wav"]
    for name in failures:  # one line per bad file on the console and in the log, naming it
        assert name in result.stderr
        assert name in (output / "audio_processing.log").read_text()
    records = manifest(output)
    assert {r["output"] for r in records} == {"good one", "sub/good_two"}
    assert (output / "sub" / "good_two" / "parts" / "part_0000.wav").exists()
    assert json.loads((output / "good one" / "report.json").read_text())["status"] == "done"
    assert "PERFORMANCE STATISTICS:" in result.stdout and "Files failed: 3" in result.stdout
    assert not leftovers(output)


@pytest.mark.e2e
def test_each_worker_loads_a_model_once_for_many_files(tmp_path, models_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    for clip in CLIPS:
        shutil.copy(clip, folder)
    output = tmp_path / "out"
    result = run_cli("--input", folder, "--output", output, "--steps", "vad", "--workers", "1",
                     AUDIO_PROCESSING_MODELS=str(models_dir))
    assert result.returncode == 0, result.stderr
    assert len(manifest(output)) == len(CLIPS)
    assert (output / "audio_processing.log").read_text().count("loaded vad model silero") == 1


@pytest.mark.e2e
def test_seed_example_single_mp3_all_stages(tmp_path, models_dir):
    """The README's first line, as written (the store is the one `make` filled): all four stages, the
    fallbacks named in the report, the statistics and report.html."""
    mp3 = tmp_path / "audio.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", data("pyannote_sample/sample.flac"), mp3], check=True)
    output = tmp_path / "results"
    # no token, as for a user without one, whatever this machine's environment has
    result = run_cli("--input", mp3, "--output", output, HF_TOKEN="")
    assert result.returncode == 0, result.stderr
    folder = output / "audio"
    for relative in ("parts/part_0000.wav", "denoised/part_0000.wav", "speech/part_0000.wav",
                     "speech/part_0000.json", "diarization/part_0000.rttm", "audio.rttm", "report.txt",
                     "report.json"):
        assert (folder / relative).exists(), relative
    report = json.loads((folder / "report.json").read_text())
    assert report["stages"]["denoise"]["method"] == "deepfilternet"
    assert report["stages"]["diar"]["model"] == "offline"
    assert any("Hugging Face token" in note for note in report["notes"]) and report["status"] == "done"
    assert report["fallbacks"] == {"denoise": "deepfilternet", "diar": "the offline pipeline"}
    fallbacks = "Fallbacks: denoise -> deepfilternet (1 file), diar -> the offline pipeline (1 file)"
    assert f"  - {fallbacks}" in result.stdout
    assert escape(fallbacks).replace("Fallbacks: ", "<dt>Fallbacks</dt><dd>") in (output / "report.html").read_text()
    assert len({speaker for _, _, speaker in read_rttm(folder / "audio.rttm")}) == 2
    assert sf.info(folder / "parts" / "part_0000.wav").samplerate == 16000
    record = manifest(output)[0]
    assert record["source"] == str(mp3) and record["speakers"] == 2
    assert set(record["outputs"]) == {"split", "denoise", "speech", "speech_segments", "diarization",
                                      "speaker_embeddings"}
    assert "GPU used: No" in result.stdout
    assert (output / "audio_processing.log").stat().st_size > 0


@pytest.mark.e2e
def test_seed_example_folder_word_boundary(tmp_path, models_dir):
    folder = tmp_path / "audio_folder"
    folder.mkdir()
    for clip in CLIPS[:2]:
        shutil.copy(clip, folder)
    output = tmp_path / "results"
    result = run_cli("--input", folder, "--output", output, "--chunk_duration", "300", "--steps", "split",
                     "denoise", "vad", "diar", "--split_method", "word_boundary", "--use_gpu", "--workers", "4",
                     HF_TOKEN="")
    assert result.returncode == 0, result.stderr
    records = manifest(output)
    assert len(records) == 2
    for record in records:  # every output of every requested stage
        assert set(record["outputs"]) == {"split", "transcript", "denoise", "speech", "speech_segments",
                                          "diarization", "speaker_embeddings"}
        assert all((output / path).is_file() for path in record["outputs"].values())
        assert (output / record["output"] / f"{Path(record['source']).stem}.rttm").is_file()
    texts = {r["output"][-4:]: r["text"].lower() for r in records}
    assert "ill disposed young man" in texts["0880"].replace("-", " ")
    cards = detect_gpus()  # --use_gpu: the GPU when this machine has one, else the CPU, and the log says which
    assert f"GPU used: {'Yes' if cards else 'No'}" in result.stdout
    log = (output / "audio_processing.log").read_text()
    assert ("devices: 1 GPU(s)" if cards else "devices: CPU (--use_gpu given, but no CUDA device was found)") in log


@pytest.mark.e2e
def test_interactive_session(tmp_path, models_dir):
    output = tmp_path / "results"
    # input, output, steps, split method (a wrong answer, then a right one), chunk, GPU, workers, confirm
    answers = "\n".join([str(CLIPS[1]), str(output), "split vad", "nonsense", "time", "1", "", "", ""]) + "\n"
    result = run_cli("--interactive", input=answers)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "found 1 audio file(s), 0.0 min of audio" in result.stdout  # 2.99 s
    cards = detect_gpus()
    assert f"GPU: {cards[0].name if cards else 'none detected'}" in result.stdout and "Summary:" in result.stdout
    assert (output / "config.toml").exists() and "PERFORMANCE STATISTICS" in result.stdout
    # the bad answer was explained and asked again
    assert "invalid choice: 'nonsense' (choose from time, word_boundary)" in result.stdout
    assert len(manifest(output)) == 3  # 2.99 s cut into 1 s parts


@pytest.mark.e2e
def test_interactive_end_of_input_cancels_cleanly(tmp_path):
    result = run_cli("--interactive", input="")
    assert result.returncode == 1 and "Cancelled." in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("arguments, message", [
    (["--input", "x.wav", "--steps", "split", "translate"], "invalid choice: 'translate'"),
    (["--input", "x.wav", "--steps", "vad", "utterances"], "--steps utterances needs diar and transcribe"),
    (["--input", "x.wav", "--chunk_duration", "-5"], "must be greater than 0"),
    (["--output", "o"], "--input is required"),
    (["--input", "/no/such/folder"], "no such file or folder"),
    (["--input", "x.wav", "--gpu_memory_limit", "1.5"], "must be between 0 and 1"),
    (["--input", "x.wav", "--split_method", "sentences"], "invalid choice: 'sentences'"),
    (["--input", "x.wav", "--asr_backend", "openai-whisper", "--asr_compute_type", "int8"],
     "--asr_compute_type applies to faster-whisper"),
])
def test_bad_arguments_exit_2_with_a_clear_message(tmp_path, capsys, arguments, message):
    code, _, stderr = run_main(capsys, *[tmp_path / a if a == "x.wav" else a for a in arguments])
    assert code == 2 and message in stderr


def test_unwritable_output_is_a_usage_error_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, _, stderr = run_main(capsys, "--input", CLIPS[0], "--output", blocker / "results")
    assert code == 2 and "not writable" in stderr


@pytest.mark.e2e
def test_a_file_past_the_timeout_is_stopped_and_the_batch_goes_on(tmp_path, models_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    rate = 16000
    rng = np.random.default_rng(0)
    sf.write(folder / "a_long.wav", (rng.standard_normal(rate * 60 * 30) * 0.1).astype(np.float32), rate)
    shutil.copy(CLIPS[1], folder / "b_short.flac")
    output = tmp_path / "out"
    result = run_cli("--input", folder, "--output", output, "--steps", "vad", "--timeout", "3", "--workers", "1",
                     AUDIO_PROCESSING_MODELS=str(models_dir))
    assert result.returncode == 1
    summary = json.loads((output / "summary.json").read_text())
    assert summary["failures"] == [{"source": str(folder / "a_long.wav"), "status": "failed",
                                    "error": "timed out after 3 s"}]
    assert [r["output"] for r in manifest(output)] == ["b_short"]
    # the killed worker's half-written speech file and scratch folder are gone
    assert not leftovers(output)


@pytest.mark.e2e
def test_a_stage_without_any_model_fails_fast_or_marks_the_file_incomplete(tmp_path):
    """An empty store and no hub: diarization has nothing to run with. Without --allow_skip nothing starts
    (exit 2, one line naming the models and the command that fetches them); with it, the other stages run and
    the file is incomplete (exit 1), in its report, the statistics and report.html."""
    empty = tmp_path / "store"
    empty.mkdir()
    args = ["--input", CLIPS[0], "--output", tmp_path / "out", "--steps", "split", "diar", "--chunk_duration", "2"]
    offline = {"AUDIO_PROCESSING_MODELS": str(empty), "HF_HUB_OFFLINE": "1", "HF_TOKEN": ""}
    refused = run_cli(*args, **offline)
    assert refused.returncode == 2 and not (tmp_path / "out").exists()
    lines = refused.stderr.splitlines()
    assert lines[0].startswith("error: diar: diarization model pyannote/speaker-diarization-3.1 needs a Hugging Face "
                               "token") and f"offline diarization models not found in {empty}" in lines[0]
    assert "run `python audio_processing.py --prepare_models` (or `make models`) to fetch them" in lines[0]
    assert "--allow_skip" in lines[1] and len(lines) == 2

    skipped = run_cli(*args, "--allow_skip", **offline)
    assert skipped.returncode == 1, skipped.stderr
    report = json.loads((tmp_path / "out" / CLIPS[0].stem / "report.json").read_text())
    assert report["status"] == "incomplete" and list(report["skipped"]) == ["diar"]
    assert report["error"].startswith("diar not run: ") and report["parts"] == 4  # 7.1 s in 2 s parts
    assert "  - Files incomplete: 1" in skipped.stdout and "  - Files processed: 0" in skipped.stdout
    assert f"! {CLIPS[0]}: incomplete: diar not run" in skipped.stdout
    assert 'data-status="incomplete"' in (tmp_path / "out" / "report.html").read_text()
    assert len(manifest(tmp_path / "out")) == 4  # the split's parts are there
