"""A batch full of awkward inputs: every good file finishes, every bad one gets one line naming it and why."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import data, leftovers, run_cli
from layout import scratch_root

SPEECH = data("librivox/sense_and_sensibility_01_austen_64kb-0880.flac")


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


REASONS = {  # the one line a user reads for each bad file
    "empty.wav": "empty file (0 bytes)",
    "zero length.wav": "no audio samples (zero-length audio)",
    "text.wav": "not an audio file, or damaged beyond reading",
    "truncated.flac": "",
    "garbage.mp3": "not an audio file, or damaged beyond reading",
    "garbage.flac": "not an audio file, or damaged beyond reading",
    "video only.mp4": "no audio stream (the file has video only)",
    "nan inside.wav": "samples that are not numbers (NaN or Inf) from 1.00 s",
}


def make_inputs(folder: Path) -> tuple[set[str], set[str]]:
    """(good names, bad names) written into folder."""
    speech, rate = sf.read(SPEECH, dtype="float32")
    good = {
        "8k mono.wav": lambda p: sf.write(p, speech[::2], 8000, subtype="PCM_16"),
        "48k 6ch.wav": lambda p: sf.write(p, np.tile(np.repeat(speech, 3)[:, None], (1, 6)) * 0.5, 48000,
                                          subtype="PCM_16"),
        "96k 24bit.wav": lambda p: sf.write(p, np.repeat(speech, 6), 96000, subtype="PCM_24"),
        "short 0.3s.wav": lambda p: sf.write(p, speech[: int(0.3 * rate)], rate, subtype="PCM_16"),
        "quote's \"name\" é ü 日本.flac": lambda p: shutil.copy(SPEECH, p),
        "compressed.ogg": lambda p: subprocess.run(["ffmpeg", "-v", "error", "-i", str(SPEECH), str(p)], check=True),
        "compressed.m4a": lambda p: subprocess.run(["ffmpeg", "-v", "error", "-i", str(SPEECH), str(p)], check=True),
        "cut short.wav": lambda p: p.write_bytes(wav_bytes(speech, rate)[: 44 + 2 * rate]),  # header says 3 s, has 1
    }
    bad = {
        "empty.wav": lambda p: p.write_bytes(b""),
        "zero length.wav": lambda p: sf.write(p, np.zeros((0, 1), dtype=np.int16), 16000, subtype="PCM_16"),
        "text.wav": lambda p: p.write_text("hello, not audio\n"),
        "truncated.flac": lambda p: p.write_bytes(SPEECH.read_bytes()[:5000]),
        "garbage.mp3": lambda p: p.write_bytes(os.urandom(20000)),
        "garbage.flac": lambda p: p.write_bytes(os.urandom(20000)),
        "video only.mp4": lambda p: subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                                                    "testsrc=duration=1:size=64x64:rate=5", str(p)], check=True),
        "nan inside.wav": lambda p: sf.write(p, np.where(np.arange(len(speech)) == rate, np.nan, speech), rate,
                                             subtype="FLOAT"),
    }
    for name, make in {**good, **bad}.items():
        make(folder / name)
    (folder / "folder.mp3").mkdir()  # a directory with an audio name: not a file, not an input
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a symlink loop
    return set(good), set(bad)


@pytest.mark.e2e
def test_awkward_inputs(tmp_path, models_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    good, bad = make_inputs(folder)
    output = tmp_path / "out"
    result = run_cli("--input", folder, "--output", output, "--steps", "split", "vad", "--chunk_duration", "1",
                     "--workers", "2", AUDIO_PROCESSING_MODELS=str(models_dir), timeout=600)
    assert result.returncode == 1
    summary = json.loads((output / "summary.json").read_text())
    failed = {Path(f["source"]).name: f["error"] for f in summary["failures"]}
    assert set(failed) == bad, failed
    for name, reason in REASONS.items():
        assert failed[name].startswith(reason) and "0x" not in failed[name] and str(folder) not in failed[name], \
            (name, failed[name])
    assert summary["files_processed"] == len(good)
    # the console has only our own lines: no decoder chatter from the workers
    assert all(line.startswith(("ERROR: ", "WARNING: ")) for line in result.stderr.splitlines() if line), \
        result.stderr
    for name in bad:  # one line each, naming the file, in the console and the log
        assert sum(name in line for line in result.stderr.splitlines()) == 1, (name, result.stderr)
        assert name in (output / "audio_processing.log").read_text()
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    by_file = {}
    for record in records:
        by_file.setdefault(Path(record["source"]).name, []).append(record)
    assert set(by_file) == good  # the symlink loop did not make duplicates, the folder named .mp3 is no input
    for name, parts in by_file.items():  # each part keeps its input's rate and channels
        info = sf.info(output / parts[0]["outputs"]["split"])
        assert (info.samplerate, info.channels) == (parts[0]["sample_rate"], parts[0]["channels"])
    assert by_file["48k 6ch.wav"][0]["channels"] == 6 and by_file["96k 24bit.wav"][0]["sample_rate"] == 96000
    assert sf.info(output / by_file["96k 24bit.wav"][0]["outputs"]["split"]).subtype == "PCM_24"
    assert len(by_file["short 0.3s.wav"]) == 1
    cut = json.loads((output / "cut short" / "report.json").read_text())
    assert cut["notes"] == ["the WAV header says 2.99 s but the file holds 1.00 s (truncated file?): the 1.00 s "
                            "are processed"] and abs(cut["duration"] - 1.0) < 1e-3


def test_disk_full_fails_the_file_cleanly(process, monkeypatch):
    """ENOSPC while writing a part: the file is reported with the reason, no half-written file is left."""
    import errno

    calls = {"n": 0}
    original = sf.SoundFile.write

    def write(self, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", write)
    report, records, output = process(data("pyannote_sample/sample.flac"), steps=("split",), chunk_duration=10)
    assert report["status"] == "failed" and report["error"].startswith("no space left on device (")
    assert len(records) == 2  # the parts written before are complete and recorded
    assert not leftovers(output)
    assert sorted(p.name for p in (output / "sample" / "parts").iterdir()) == ["part_0000.wav", "part_0001.wav"]


@pytest.mark.e2e
def test_a_file_that_disappears_during_the_run(tmp_path, models_dir):
    import time

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    # 3 minutes: the other file is removed as soon as this one starts, long before it is done
    sf.write(folder / "a_long.wav", (rng.standard_normal(16000 * 60 * 3) * 0.1).astype(np.float32), 16000)
    shutil.copy(SPEECH, folder / "zz_vanishing.flac")
    output = tmp_path / "out"
    command = [os.sys.executable, "audio_processing.py", "--input", str(folder), "--output", str(output),
               "--steps", "vad", "--workers", "1"]
    process = subprocess.Popen(command, cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "AUDIO_PROCESSING_MODELS": str(models_dir)})
    # a_long's scratch folder: it has started. Not any temp file: config.toml's is written before the inputs are
    # listed, and a file removed then is not in the batch at all
    def started() -> bool:
        try:
            return any(scratch_root(output).iterdir())
        except FileNotFoundError:  # not made yet, or being cleared at the start of the run
            return False

    deadline = time.monotonic() + 120
    while not started() and time.monotonic() < deadline:
        time.sleep(0.02)
    (folder / "zz_vanishing.flac").unlink()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    summary = json.loads((output / "summary.json").read_text())
    assert summary["failures"] == [{"source": str(folder / "zz_vanishing.flac"), "status": "failed",
                                    "error": "file not found"}]
    assert summary["files_processed"] == 1 and "zz_vanishing.flac: file not found" in stderr


def test_output_folders_are_safe_and_unique_whatever_the_names():
    from batch.jobs import output_keys

    names = ["...flac", "..flac", "a.wav", "a.flac", "a.wav.mp3", ".scratch-0-x.flac", "sub/.hidden.wav",
             "sub/b.wav", "A.wav", "x", "summary.json.flac", "Manifest.jsonl/x.wav", "_manifest.jsonl.wav",
             "c.flac", "c/speech.flac", "c/speech/part_0000.flac", "d~2/x.wav", "d.wav", "d.flac", "d.wav.mp3"]
    keys = output_keys([Path(name) for name in names])
    assert keys == ["_flac", "_flac~2", "a.wav", "a.flac", "a.wav~2", "_scratch-0-x", "sub/_hidden", "sub/b",
                    "A.wav~3", "x", "_summary.json", "_Manifest.jsonl/x", "_manifest.jsonl.wav", "c.flac",
                    "c/speech.flac", "c/speech/part_0000", "d~2/x", "d.wav", "d.flac", "d.wav~2"]
    folded = [key.casefold() for key in keys]
    assert len(set(folded)) == len(keys)  # no two share a folder
    assert not any(other.startswith(key + "/") for key in folded for other in folded)  # nor hold another's
    assert not any(part.startswith(".") for key in keys for part in key.split("/"))


def test_long_names_fit_and_temp_names_stay_short(tmp_path):
    from audio_io import write_text
    from layout import NAME_MAX, whole_file_name

    stem = "x" * 246  # a legal 250-byte input name, "x...x.wav"
    names = {whole_file_name(stem, pattern) for pattern in ("<stem>.rttm", "<stem>.exclusive.rttm")}
    assert all(len(name.encode()) <= NAME_MAX for name in names) and len(names) == 2
    assert whole_file_name("interview", "<stem>.exclusive.rttm") == "interview.exclusive.rttm"
    assert len(whole_file_name("é" * 200, ".rttm").encode()) <= NAME_MAX  # cut between characters, not bytes
    for name in names:
        write_text(tmp_path / name, "SPEAKER ...\n")  # its temp name fits too
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(names)


def test_a_second_run_on_the_same_output_is_refused_until_the_first_ends(tmp_path, capsys):
    """Two runs on one folder once both wrote every part into the manifest twice. The second is now refused at
    once with the first's pid, before it writes anything; a first run that was killed leaves no stuck lock."""
    import signal

    from conftest import ROOT, run_main

    output = tmp_path / "results"
    holder = subprocess.Popen([os.sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from layout import lock_output; lock_output(__import__('pathlib').Path(sys.argv[2]));"
                               " print('locked', flush=True); time.sleep(600)", str(ROOT), str(output)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    code, _, err = run_main(capsys, "--input", SPEECH, "--output", output, "--steps", "split")
    assert code == 2 and f"in use by another run (pid {holder.pid})" in err
    assert sorted(path.name for path in output.iterdir()) == [".audio_processing"]  # nothing written
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    code, _, err = run_main(capsys, "--input", SPEECH, "--output", output, "--steps", "split")
    assert code == 0, err
    assert (output / "manifest.jsonl").read_text().count('"part": 0') == 1


def test_the_manifest_reader_drops_duplicate_records(tmp_path):
    from batch.resume import read_manifest

    lines = [{"output": "a", "part": 0, "v": 1}, {"output": "a", "part": 1}, {"output": "a", "part": 0, "v": 2},
             {"output": "b", "part": 0}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"cut sho')
    assert read_manifest(tmp_path) == [{"output": "a", "part": 0, "v": 2}, {"output": "a", "part": 1},
                                       {"output": "b", "part": 0}]


def test_the_one_delete_refuses_anything_outside_the_output_folder(tmp_path):
    from batch.resume import remove

    output = tmp_path / "out"
    (output / "a").mkdir(parents=True)
    (output / "a" / "part_0000.wav").write_bytes(b"x")
    mine = tmp_path / "my_notes.txt"
    mine.write_text("the user's own file, beside the results")
    for outside in (output / ".." / "my_notes.txt", mine, output, output / "a" / ".." / ".."):
        with pytest.raises(RuntimeError, match="refusing to delete"):
            remove(output, outside)
    assert mine.exists()
    remove(output, output / "a" / "part_0000.wav")
    assert not (output / "a" / "part_0000.wav").exists()


@pytest.mark.e2e
def test_inputs_named_to_escape_or_collide_keep_every_output_inside(tmp_path, models_dir):
    """`...flac` once wrote to <output>/.. and its clean-up deleted the user's files there; a.wav, a.flac and
    a.wav.mp3 once shared one folder; summary.json.flac crashed the run at its end; b/speech.flac's redo deleted
    b.flac's speech outputs; .scratch-0-x.flac lost its outputs to the scratch clean-up. Each now has a folder of
    its own inside --output, also on a redo, and the redo deletes only what the tool writes."""
    parent = tmp_path / "work"
    folder = parent / "in"
    (folder / "b").mkdir(parents=True)
    names = ("...flac", "..flac", "a.wav", "a.flac", "b.flac", "b/speech.flac", "summary.json.flac",
             "audio_processing.log.flac", ".scratch-0-x.flac")
    for name in names:
        shutil.copy(SPEECH, folder / name) if name.endswith(".flac") else sf.write(
            folder / name, sf.read(SPEECH)[0], 16000)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(SPEECH), str(folder / "a.wav.mp3")], check=True)
    mine = parent / "my_notes.txt"
    mine.write_text("the user's own file, beside the results")
    (parent / "other").mkdir()
    (parent / "other" / "part_0000.wav").write_bytes(b"also the user's")
    output = parent / "results"
    args = ["--input", folder, "--output", output, "--steps", "split", "vad", "--chunk_duration", "2",
            "--workers", "1"]
    for extra in ([], ["--vad_threshold", "0.6"]):  # the second run redoes the VAD: its clean-up runs
        result = run_cli(*args, *extra, AUDIO_PROCESSING_MODELS=str(models_dir))
        assert result.returncode == 0, result.stderr
        (output / "b.flac" / "speech" / "notes.txt").write_text("the user's, in a results folder")
    assert mine.read_text().startswith("the user's") and (parent / "other" / "part_0000.wav").exists()
    assert (output / "b.flac" / "speech" / "notes.txt").exists()
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert {record["output"] for record in records} == {
        "_flac", "_flac~2", "a.wav", "a.flac", "a.wav~2", "b.flac", "b/speech", "_summary.json",
        "_audio_processing.log", "_scratch-0-x"}
    assert len(records) == 2 * 10  # two parts each, none twice
    for record in records:
        for path in record["outputs"].values():
            assert (output / path).resolve().is_relative_to(output.resolve()) and (output / path).is_file()
        report = json.loads((output / record["output"] / "report.json").read_text())
        assert report["status"] == "done" and report["source"] == record["source"]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["files_processed"] == 10
    # the second run redid every file's VAD: its first part was written after start-up, within the run
    assert 0 < summary["time_to_first_output"] < summary["wall_seconds"]
    assert f"Time to first output: {summary['time_to_first_output']:.1f} s" in result.stdout


@pytest.mark.parametrize("arguments, message", [
    (["--chunk_duration", "nan"], "must be a finite number, got nan"),
    (["--timeout", "nan"], "must be a finite number, got nan"),
    (["--timeout", "inf"], "must be a finite number, got inf"),
    (["--gpu_memory_limit", "nan"], "must be a finite number, got nan"),
    (["--speech_pad_ms", "-30"], "must be at least 0, got -30"),
    (["--output", ""], "--output: must not be empty"),
    (["--output", "in"], "is the --input folder"),
    (["--output", "in/../in/"], "is the --input folder"),
    (["--output", "in/speech.wav"], "is a file, not a folder"),
    (["--config", "latin1.toml"], "not UTF-8 text"),
])
def test_bad_options_are_usage_errors_before_anything_is_written(tmp_path, capsys, monkeypatch, arguments,
                                                                 message):
    from conftest import run_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    shutil.copy(SPEECH, tmp_path / "in" / "speech.wav")
    (tmp_path / "latin1.toml").write_bytes('output = "r\xe9sultats"\n'.encode("latin-1"))
    before = sorted(tmp_path.rglob("*"))
    code, _, stderr = run_main(capsys, "--input", "in", *arguments)
    assert code == 2 and message in stderr, stderr
    assert sorted(tmp_path.rglob("*")) == before  # not a byte written, here or among the recordings


def test_a_file_name_that_is_not_utf8_is_reported_and_the_batch_goes_on(tmp_path, capsys):
    from conftest import run_main

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SPEECH, folder / "good.flac")
    shutil.copy(SPEECH, os.fsdecode(bytes(folder) + b"/caf\xe9.flac"))
    output = tmp_path / "out"
    code, _, stderr = run_main(capsys, "--input", folder, "--output", output, "--steps", "split", "--workers", "1")
    assert code == 1
    assert stderr.count("caf\\xe9.flac: file name is not valid UTF-8") == 1, stderr
    summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
    assert summary["files_processed"] == 1 and summary["failures"][0]["source"].endswith("caf\\xe9.flac")
    assert "caf\\xe9.flac" in (output / "report.html").read_text(encoding="utf-8")


def test_outputs_respect_the_umask(tmp_path):
    from audio_io import new_file_mode, write_text

    new_file_mode.cache_clear()
    saved = os.umask(0o002)  # a group's data set
    try:
        write_text(tmp_path / "report.txt", "x")
        assert (tmp_path / "report.txt").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(saved)
        new_file_mode.cache_clear()


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MiB file system (tmpfs; mounting needs root, which CI has)."""
    place = tmp_path / "small_disk"
    place.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(place)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    yield place
    subprocess.run(["umount", "-l", str(place)], check=True)


@pytest.mark.e2e
def test_a_full_disk_is_named_and_no_new_file_is_started(tmp_path, small_disk, models_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    speech, rate = sf.read(SPEECH, dtype="int16")
    for index in range(6):  # 1.9 MB of parts each: the second file fills the disk
        sf.write(folder / f"clip{index}.wav", np.tile(speech, 20), rate * 2, subtype="PCM_16")
    output = small_disk / "results"
    result = run_cli("--input", folder, "--output", output, "--steps", "split", "--chunk_duration", "10",
                     "--workers", "1", AUDIO_PROCESSING_MODELS=str(models_dir))
    assert result.returncode == 1
    assert f"no space left on device ({output}): no new file is started" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "System error" not in result.stderr + result.stdout
    assert result.stderr.count("no space left") <= 3, result.stderr  # not one line per remaining file
    assert "clip5.wav: failed: not started: no space left on device" in result.stdout
    assert not leftovers(output)
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert records and all(sf.info(output / r["outputs"]["split"]).frames == r["frames"] for r in records)
