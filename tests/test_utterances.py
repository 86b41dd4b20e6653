"""utterances: single-speaker clips cut between words, the input's own samples, manifests a trainer loads."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf

from conftest import data, data_companion, data_glob, run_cli

SAMPLE = data("pyannote_sample/sample.flac")
ALL_STEPS = ("split", "vad", "diar", "transcribe", "utterances")
SLACK = 0.05  # a forced alignment's word edges are good to a few 10 ms frames


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.e2e
def test_utterances_a_trainer_can_load_and_a_rerun_that_only_recuts_them(tmp_path, models_dir):
    from datasets import load_dataset

    from bench.transcript import purity

    folder, output = tmp_path / "in", tmp_path / "results"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "sample.flac")
    args = ["--input", folder, "--output", output, "--steps", *ALL_STEPS, "--chunk_duration", "10",
            "--diarization_model", "offline", "--language", "en", "--workers", "1"]
    env = {"AUDIO_PROCESSING_MODELS": str(models_dir)}
    result = run_cli(*args, **env)
    assert result.returncode == 0, result.stderr
    manifest = lines(output / "utterances.jsonl")
    assert len(manifest) >= 4
    source, rate = sf.read(SAMPLE, dtype="int16")
    for record in manifest:
        assert set(record) == {"audio_filepath", "duration", "text", "speaker", "source", "offset", "dnsmos_sig",
                               "dnsmos_bak", "dnsmos_ovrl"}
        assert record["speaker"].startswith("sample/SPEAKER_") and record["duration"] >= 1.0
        assert all(1.0 <= record[key] <= 5.0 for key in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"))
        clip, clip_rate = sf.read(output / record["audio_filepath"], dtype="int16")
        first = round(record["offset"] * rate)
        assert clip_rate == rate and np.array_equal(clip, source[first: first + len(clip)])  # the input's samples
    assert purity(manifest, data_companion(SAMPLE, ".rttm"))[0] >= 95  # % of their time the majority speaker's
    # Hugging Face's audiofolder loader reads the folder as it is
    dataset = load_dataset("audiofolder", data_dir=str(output / "utterances"), split="train")
    assert sorted(dataset["text"]) == sorted(record["text"] for record in manifest)
    assert len(dataset[0]["audio"]["array"]) > 0
    assert 'id="dnsmos"' in (output / "report.html").read_text()

    # New utterance options re-cut the utterances only: every part's words and diarization are kept.
    result = run_cli(*args, "--max_utterance", "2", "--min_utterance", "0", "--keep_overlap",
                     "--utterance_sample_rate", "22050", **env)
    assert result.returncode == 0, result.stderr
    report = json.loads((output / "sample" / "report.json").read_text())
    parts = report["parts"]
    assert report["stages"]["transcribe"]["reused_parts"] == parts == report["stages"]["diar"]["reused_parts"]
    recut = lines(output / "utterances.jsonl")
    assert len(recut) > len(manifest)
    on_disk = sorted(p.relative_to(output).as_posix() for p in (output / "utterances").rglob("*.wav"))
    assert on_disk == sorted(record["audio_filepath"] for record in recut)  # the first cut's clips are gone
    for record in recut:
        info = sf.info(output / record["audio_filepath"])
        assert info.samplerate == 22050 and info.channels == 1
        assert abs(info.duration - record["duration"]) < 1e-3
    # with nothing dropped, one speaker's utterances are that speaker's words in the transcript
    document = json.loads((output / "sample" / "sample.json").read_text())
    said, cut = defaultdict(list), defaultdict(list)
    for segment in document["segments"]:
        said[f"sample/{segment['speaker']}"] += [w["word"].strip() for w in segment["words"]]
    for record in sorted(recut, key=lambda r: r["offset"]):
        cut[record["speaker"]] += record["text"].split()
    assert {speaker: words for speaker, words in said.items() if not speaker.endswith("unknown")} == dict(cut)


def test_no_utterance_starts_or_ends_inside_a_word(process, tmp_path):
    """The librivox chapters joined (one reader), cut by its forced-alignment words: every clip edge lies
    between two words, and the clips are the file's own samples."""
    pieces, words, at = [], [], 0.0
    for path in sorted(data_glob("librivox/*.flac")):
        audio, rate = sf.read(path, dtype="int16")
        alignment = json.loads(data_companion(path, ".json").read_text())
        words += [(at + w["b"], at + w["b"] + w["d"]) for w in alignment["w"] if w["t"] != "<sil>"]
        pieces += [audio, np.zeros(int(0.7 * rate), dtype=np.int16)]
        at += len(audio) / rate + 0.7
    joined = tmp_path / "chapters.wav"
    audio = np.concatenate(pieces)
    sf.write(joined, audio, rate, subtype="PCM_16")
    report, _, output = process(joined, steps=("vad", "diar", "transcribe", "utterances"), diarization_model="offline",
                                min_utterance=0.0, max_utterance=8.0)
    assert report["status"] == "done", report
    found = lines(output / "chapters" / "chapters.utterances.jsonl")
    assert len(found) >= 5  # 5 chapters, 0.7 s and more apart: cut in their silences, wherever Whisper put the words
    for record in found:
        for edge in (record["offset"], record["offset"] + record["duration"]):
            inside = [(start, end) for start, end in words if start + SLACK < edge < end - SLACK]
            assert not inside, (record, edge, inside)
        clip, _ = sf.read(output / record["audio_filepath"], dtype="int16")
        first = round(record["offset"] * rate)
        assert np.array_equal(clip, audio[first: first + len(clip)])

    report, _, output = process(joined, steps=("vad", "diar", "transcribe", "utterances"), diarization_model="offline",
                                min_utterance=0.0, max_utterance=8.0, min_dnsmos=4.9, output_name="strict")
    info = report["stages"]["utterances"]
    assert info["utterances"] == 0 and info["dropped_low_quality"] == len(found)
    assert not list((output / "utterances").rglob("*.wav"))
