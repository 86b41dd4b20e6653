"""transcribe: words with speakers on the file's timeline, no word lost or doubled at cuts, subtitles that parse."""

from __future__ import annotations

import json

import numpy as np
import pysubs2
import pytest
import soundfile as sf

from conftest import data, data_companion, data_glob

SAMPLE = data("pyannote_sample/sample.flac")
JFK = data("jfk/jfk.flac")
DIARIZED = dict(steps=("split", "vad", "diar", "transcribe"), diarization_model="offline")


def transcript(output, source) -> dict:
    return json.loads((output / source.stem / f"{source.stem}.json").read_text())


def words_of(document: dict) -> list[dict]:
    return [word for segment in document["segments"] for word in segment["words"]]


def reference_stm(path) -> list[tuple[str, str]]:
    """(speaker, text) per STM line."""
    return [(fields[2], fields[5]) for fields in (line.split(None, 5) for line in path.read_text().splitlines())]


def test_speaker_attributed_transcript_of_a_real_conversation(process):
    from bench.transcript import by_speaker, cp_wer, errors

    report, _, output = process(SAMPLE, chunk_duration=10.0, **DIARIZED)
    assert report["status"] == "done", report
    document = transcript(output, SAMPLE)
    segments = document["segments"]
    # a segment never carries two speakers, and every word has one here (the sample is all inside turns)
    assert all(word["speaker"] == segment["speaker"] for segment in segments for word in segment["words"])
    assert sum(word["speaker"] == "unknown" for word in words_of(document)) <= 2
    assert len(document["speakers"]) == 2
    reference = reference_stm(data_companion(SAMPLE, ".stm"))
    hypothesis = [(segment["speaker"], segment["text"]) for segment in segments]
    plain = errors(" ".join(text for _, text in reference), " ".join(text for _, text in hypothesis)).rate
    assert plain < 25  # % of the reference words; measured 15 (Whisper base, int8)
    pick = dict(speaker=lambda line: line[0], text=lambda line: line[1])
    assert cp_wer(by_speaker(reference, **pick), by_speaker(hypothesis, **pick)) <= plain + 5  # who said it
    # the subtitles parse back, one cue per segment with its speaker and times
    for kind in ("srt", "vtt"):
        cues = pysubs2.load(str(output / SAMPLE.stem / f"{SAMPLE.stem}.{kind}"))
        assert len(cues) == len(segments)
        for cue, segment in zip(cues, segments):
            assert cue.text.startswith(f"[{segment['speaker']}] ")
            assert abs(cue.start / 1000 - segment["start"]) <= 0.001 and abs(cue.end / 1000 - segment["end"]) <= 0.001
    lines = (output / SAMPLE.stem / f"{SAMPLE.stem}.txt").read_text().splitlines()
    speakers = [line.split("] ", 1)[1].split(":", 1)[0] for line in lines]
    assert all(a != b for a, b in zip(speakers, speakers[1:]))  # one line per speaker turn
    assert report["stages"]["transcribe"]["words"] == len(words_of(document))


def test_a_time_split_finds_the_same_words_as_the_whole_file(process, tmp_path):
    """Two LibriSpeech readers' utterances joined (real read speech, 2.4 minutes), cut every 40 s: the cuts fall
    inside words, and each word is still found once, in the part its middle lies in."""
    from bench.transcript import errors

    paths = sorted(data_glob("librispeech_speakers/*/*.flac"))[:20]  # two readers' ten utterances each
    audio = np.concatenate([sf.read(path, dtype="int16")[0] for path in paths])
    joined = tmp_path / "readers.wav"
    sf.write(joined, audio, 16000, subtype="PCM_16")
    steps = dict(steps=("split", "vad", "transcribe"))
    _, _, whole = process(joined, chunk_duration=1000.0, output_name="whole", **steps)
    report, records, split = process(joined, chunk_duration=40.0, output_name="split", **steps)
    assert len(records) == 4 and report["status"] == "done"
    whole_words = [w["word"] for w in words_of(transcript(whole, joined))]
    split_words = [w["word"] for w in words_of(transcript(split, joined))]
    assert errors(" ".join(whole_words), " ".join(split_words)).rate <= 2  # % of the words
    starts = [w["start"] for w in words_of(transcript(split, joined))]
    assert starts == sorted(starts)
    for record in records:  # each part's words lie in the part (by their middle)
        part = json.loads((split / record["outputs"]["words"]).read_text())
        assert all(record["offset"] <= (w["start"] + w["end"]) / 2 < record["offset"] + record["duration"]
                   for w in part["words"])


def test_only_the_speech_vad_found_is_decoded(process, tmp_path):
    """jfk, 40 s of silence, jfk: both sentences found, at their own times, and nothing in the silence."""
    audio, rate = sf.read(JFK, dtype="float32")
    joined = tmp_path / "gaps.wav"
    silence = np.zeros((40 * rate, *audio.shape[1:]), dtype=np.float32)
    sf.write(joined, np.concatenate([audio, silence, audio]), rate, subtype="PCM_16")
    report, records, output = process(joined, steps=("vad", "transcribe"))
    words = words_of(transcript(output, joined))
    first = [w for w in words if w["end"] <= len(audio) / rate + 0.5]
    second = [w for w in words if w["start"] >= len(audio) / rate + 40 - 0.5]
    assert len(first) + len(second) == len(words)  # no word in the silence
    plain = lambda found: [w["word"].strip(" ,.?!").lower() for w in found]  # noqa: E731
    assert plain(first) == plain(second) and len(first) >= 20
    assert all(w["speaker"] is None for w in words)  # no diar: no speakers, and none made up
    speech = json.loads((output / records[0]["outputs"]["speech_segments"]).read_text())["segments"]
    assert sum(s["end"] - s["start"] for s in speech) < 25  # what was decoded: the speech, not the 62 s


def test_word_boundary_split_words_are_reused_and_output_format_chooses_files(process):
    report, records, output = process(JFK, steps=("split", "transcribe"), split_method="word_boundary",
                                      chunk_duration=5.0, output_format="srt")
    assert report["stages"]["transcribe"]["words_from"] == "split"
    for record in records:
        split_words = json.loads((output / record["outputs"]["transcript"]).read_text())["words"]
        assert json.loads((output / record["outputs"]["words"]).read_text())["words"] == split_words
    written = sorted(path.suffix for path in (output / JFK.stem).glob(f"{JFK.stem}.*"))
    assert written == [".srt"]
    text = " ".join(event.text for event in pysubs2.load(str(output / JFK.stem / f"{JFK.stem}.srt")))
    assert "ask not what your country can do for you" in text.lower()


@pytest.mark.parametrize("speaker_turns, expected", [
    ("word", [("A", "Yes."), ("B", "I agree with"), ("A", "you fully now."), ("A", "So we go."), ("unknown", "Far")]),
    ("sentence", [("A", "Yes."), ("A", "I agree with you fully now."), ("A", "So we go."), ("unknown", "Far")]),
])
def test_a_segment_never_carries_two_speakers(speaker_turns, expected):
    from loaders.asr import Word
    from stages.diarize import Turn
    from stages.transcribe import attribute

    timed = [(" Yes.", 0.0, 0.4), (" I", 0.5, 0.6), (" agree", 0.6, 0.8), (" with", 0.8, 1.0), (" you", 1.0, 1.4),
             (" fully", 1.4, 1.8), (" now.", 1.8, 2.2), (" So", 3.0, 3.2), (" we", 3.2, 3.4), (" go.", 3.4, 3.7),
             (" Far", 9.0, 9.3)]
    words = [Word(text, start, end, 0.9) for text, start, end in timed]
    # "So" falls in B's turn: one word at a turn change, joined to the rest of its sentence, is a timing error;
    # "Far" is in no turn nor within 0.5 s of one
    turns = [Turn(0.0, 0.45, "A"), Turn(0.45, 1.0, "B"), Turn(1.0, 2.9, "A"), Turn(2.9, 3.2, "B"),
             Turn(3.2, 4.0, "A")]
    segments = attribute(words, turns, speaker_turns)
    assert [(segment.speaker, segment.text) for segment in segments] == expected
    assert [w for segment in segments for w in segment.words] == words  # no word lost or doubled
