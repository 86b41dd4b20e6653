"""split: sample-exact time parts, bounded memory, and word-boundary cuts that never fall inside a word."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, data, data_companion, data_glob

LIBRIVOX = data_glob("librivox/*.flac")


def joined_parts(output: Path, key: str) -> np.ndarray:
    parts = sorted((output / key / "parts").glob("part_*.wav"))
    return np.concatenate([sf.read(part, dtype="int32", always_2d=True)[0] for part in parts])


@pytest.mark.parametrize("source, chunk", [(data("jfk/jfk.flac"), 3.0),  # 24-bit stereo 44.1 kHz
                                           (data("pyannote_sample/sample.flac"), 7.3)])  # 16-bit mono 16 kHz
def test_time_split_is_sample_exact(process, source, chunk):
    report, records, output = process(source, steps=("split",), chunk_duration=chunk)
    assert report["status"] == "done", report
    original, rate = sf.read(source, dtype="int32", always_2d=True)
    assert np.array_equal(joined_parts(output, source.stem), original)
    info = sf.info(output / source.stem / "parts" / "part_0000.wav")
    assert (info.samplerate, info.channels, info.subtype) == (rate, original.shape[1], sf.info(source).subtype)
    expected_parts = int(np.ceil(len(original) / round(chunk * rate)))
    assert [r["part"] for r in records] == list(range(expected_parts))
    assert all(r["duration"] == pytest.approx(chunk, abs=1e-6) for r in records[:-1])
    assert records[1]["offset"] == pytest.approx(chunk, abs=1e-6)


MEMORY_PROBE = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from config import RunConfig
    from gpu_memory import GPUMemoryManager
    from model_manager import ModelManager
    from batch.jobs import FileJob
    from batch.pipeline import process_file
    source, output = Path(sys.argv[1]), Path(sys.argv[2])
    config = RunConfig(input=source, output=output, steps=("split",), chunk_duration=60)
    report = process_file(FileJob(0, source, "x"), config, ModelManager(GPUMemoryManager(use_gpu=False)),
                          lambda kind, payload: None)
    assert report["status"] == "done", report
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


def peak_rss_mb(source: Path, output: Path) -> int:
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(source), str(output), str(ROOT)],
                            capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1])


def test_time_split_memory_does_not_grow_with_file_length(tmp_path):
    rate, channels = 16000, 2
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, np.zeros((rate * 10, channels), dtype=np.int16), rate, subtype="PCM_16")
    rng = np.random.default_rng(0)
    with sf.SoundFile(long, "w", rate, channels, "PCM_16") as handle:  # one hour: 230 MB on disk, 460 MB as int32
        for _ in range(60):
            handle.write(rng.integers(-3000, 3000, (rate * 60, channels), dtype=np.int16))
    short_peak = peak_rss_mb(short, tmp_path / "out_short")
    long_peak = peak_rss_mb(long, tmp_path / "out_long")
    assert len(list((tmp_path / "out_long" / "x" / "parts").glob("*.wav"))) == 60
    assert long_peak - short_peak < 120, (short_peak, long_peak)


# ---- word boundaries, on real read speech with forced-alignment word times ----

def librivox_joined(tmp_path: Path) -> tuple[Path, list[tuple[float, float, str]], list[str]]:
    """The five consecutive LibriVox sentences as one 24.7 s file, with the reference word intervals."""
    audio, words, text = [], [], []
    offset = 0.0
    for clip in LIBRIVOX:
        samples, rate = sf.read(clip, dtype="int16")
        audio.append(samples)
        alignment = json.loads(data_companion(clip, ".json").read_text())
        for word in alignment["w"]:
            if not word["t"].startswith("<") and not word["t"].startswith("["):
                words.append((offset + word["b"], offset + word["b"] + word["d"], re.sub(r"\(\d+\)", "", word["t"])))
        text.extend(data_companion(clip, ".txt").read_text().split())
        offset += len(samples) / rate
    path = tmp_path / "austen.wav"
    sf.write(path, np.concatenate(audio), rate, subtype="PCM_16")
    return path, words, text


def speech_level_db(audio: np.ndarray, rate: int) -> float:
    """Median power of the louder half of the 10 ms frames: the level of the speech itself."""
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    power_db = 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)
    return float(np.median(np.sort(power_db)[len(power_db) // 2:]))


def normalized_words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1] / max(1, len(reference))


@pytest.mark.parametrize("backend, model", [("faster-whisper", "base"), ("openai-whisper", "base")])
def test_word_boundary_split_cuts_between_words(process, tmp_path, backend, model):
    source, reference_words, reference_text = librivox_joined(tmp_path)
    chunk = 8.0  # +-1.2 s holds a pause between sentences, as +-15% of a few minutes always does
    report, records, output = process(source, steps=("split",), split_method="word_boundary", chunk_duration=chunk,
                                      asr_backend=backend, whisper_model=model, output_name="split")
    assert report["status"] == "done" and not report["notes"], report
    assert report["stages"]["split"]["method"] == "word_boundary"
    cuts = [r["offset"] for r in records[1:]]
    assert len(cuts) >= 2
    for previous, cut in zip([0.0] + cuts, cuts):
        assert chunk * 0.85 - 1e-3 <= cut - previous <= chunk * 1.15 + 1e-3
    original, rate = sf.read(source, dtype="int32", always_2d=True)
    speech_level = speech_level_db(original[:, 0] / 2 ** 31, rate)
    for cut in cuts:
        # Not inside a word of the forced alignment. Its edges are good to ~0.1 s only: it puts "he" at
        # 17.88 s, before the quietest frames of that pause (17.93-17.96 s) where Whisper and the energy agree.
        inside = [w for w in reference_words if w[0] + 0.1 < cut < w[1] - 0.1]
        assert not inside, (cut, inside)
        # And physically in a pause: the 30 ms around the cut are far below the speech level.
        around = original[round((cut - 0.015) * rate): round((cut + 0.015) * rate), 0] / 2 ** 31
        assert 10 * np.log10(np.mean(around ** 2) + 1e-12) < speech_level - 15, cut
    assert np.array_equal(joined_parts(output, "austen"), original)

    # The parts' transcripts joined are the words of the whole file's transcript.
    parts_text = [json.loads((output / r["outputs"]["transcript"]).read_text())["text"] for r in records]
    assert [r["text"] for r in records] == parts_text
    whole, _, _ = process(source, steps=("split",), split_method="word_boundary", chunk_duration=100,
                          asr_backend=backend, whisper_model=model, output_name="whole")
    whole_text = json.loads((tmp_path / "whole" / "austen" / "transcripts" / "part_0000.json").read_text())["text"]
    joined = normalized_words(" ".join(parts_text))
    assert word_error_rate(normalized_words(whole_text), joined) <= 0.03, (whole_text, joined)
    assert word_error_rate(reference_text, joined) <= 0.10, joined
    # every transcript word lies inside its part, on the original timeline
    for record in records:
        words = json.loads((output / record["outputs"]["transcript"]).read_text())["words"]
        for word in words:
            end = record["offset"] + record["duration"]
            assert record["offset"] - 0.05 <= word["start"] <= word["end"] <= end + 0.05


def test_word_boundary_without_whisper_falls_back_to_time_split(process, tmp_path):
    source = data("pyannote_sample/sample.flac")
    report, records, _ = process(source, steps=("split",), split_method="word_boundary", chunk_duration=10,
                                 whisper_model=str(tmp_path / "no-such-model"))
    assert report["status"] == "done"
    assert report["stages"]["split"]["method"] == "time"
    assert report["fallbacks"] == {"split": "time split"}
    assert any(note.startswith("split: used time split instead of word_boundary: whisper model path")
               for note in report["notes"])
    assert [r["offset"] for r in records] == [0.0, 10.0, 20.0]


def test_word_boundary_cuts_share_one_whisper_window(process, model_manager, monkeypatch):
    """30 s cut about every 8 s takes one transcription: Whisper pads shorter audio to 30 s anyway, so each
    window covers at least that much, and every cut whose range and margin it covers comes from it."""
    calls = []
    transcriber = model_manager.get_whisper_model("base", "faster-whisper")
    transcribe = transcriber.transcribe
    monkeypatch.setattr(transcriber, "transcribe", lambda audio: calls.append(len(audio)) or transcribe(audio))
    report, records, _ = process(data("pyannote_sample/sample.flac"), steps=("split",),
                                 split_method="word_boundary", chunk_duration=8)
    assert report["status"] == "done" and len(records) >= 3 and calls == [30 * 16000], (records, calls)
    assert all(abs(r["frames"] / 16000 - 8) <= 8 * 0.15 for r in records[:-1])
