"""vad: speech found where the reference labels say; silence removed; times on the original timeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import data, data_companion, data_glob

FRAME = 0.01


def reference_regions(path: Path) -> list[tuple[float, float]]:
    return [tuple(map(float, line.split()[:2])) for line in path.read_text().splitlines() if line.strip()]


def frames(regions, duration: float) -> np.ndarray:
    mask = np.zeros(int(round(duration / FRAME)), dtype=bool)
    for start, end in regions:
        mask[int(round(start / FRAME)): int(round(end / FRAME))] = True
    return mask


def frame_f1(reference: np.ndarray, hypothesis: np.ndarray) -> float:
    true_positive = np.sum(reference & hypothesis)
    precision = true_positive / max(1, hypothesis.sum())
    recall = true_positive / max(1, reference.sum())
    return 2 * precision * recall / max(1e-9, precision + recall)


def found_segments(output: Path, records: list[dict]) -> list[tuple[float, float]]:
    segments = []
    for record in records:
        segments_file = json.loads((output / record["outputs"]["speech_segments"]).read_text())
        segments.extend((s["start"], s["end"]) for s in segments_file["segments"])
    return segments


@pytest.mark.parametrize("clip", data_glob("librivox/*.flac"), ids=lambda p: p.stem[-4:])
def test_speech_found_where_the_reference_says(process, clip):
    report, records, output = process(clip, steps=("vad",))
    assert report["status"] == "done", report
    duration = sf.info(clip).duration
    reference = frames(reference_regions(data_companion(clip, ".speech.txt")), duration)
    hypothesis = frames(found_segments(output, records), duration)
    assert frame_f1(reference, hypothesis) >= 0.85


def test_vad_on_split_parts_keeps_the_original_timeline(process):
    """conv3: 14 speech regions of a 3-speaker call, cut into 10 s parts before the VAD."""
    source = data("conv3/conv3.flac")
    report, records, output = process(source, steps=("split", "vad"), chunk_duration=10)
    assert report["status"] == "done" and len(records) == 7
    duration = sf.info(source).duration
    reference = frames(reference_regions(data_companion(source, ".speech.txt")), duration)
    segments = found_segments(output, records)
    assert frame_f1(reference, frames(segments, duration)) >= 0.9
    for record in records:  # each part's segments lie inside the part, in original-file seconds
        found = json.loads((output / record["outputs"]["speech_segments"]).read_text())
        for segment in found["segments"]:
            assert record["offset"] <= segment["start"] < segment["end"] <= record["offset"] + record["duration"] + 1e-3
        # the speech-only audio is exactly the speech segments, at the part's rate
        audio, rate = sf.read(output / record["outputs"]["speech"])
        assert rate == 16000
        assert len(audio) / rate == pytest.approx(sum(s["end"] - s["start"] for s in found["segments"]), abs=0.01)
        assert record["speech_duration"] == pytest.approx(len(audio) / rate, abs=0.01)


def test_speech_audio_keeps_rate_and_channels(process):
    source = data("jfk/jfk.flac")  # 44.1 kHz stereo 24-bit
    report, records, output = process(source, steps=("vad",))
    info = sf.info(output / records[0]["outputs"]["speech"])
    assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_24")
    assert 7.0 < records[0]["speech_duration"] < 11.0


def test_music_alone_is_not_speech(process):
    source = data("noise/vibe_ace_30s.flac")
    report, records, _ = process(source, steps=("vad",))
    assert report["status"] == "done"
    assert records[0]["speech_duration"] < 3.0


def test_small_op_models_run_on_one_thread_on_the_cpu_and_give_it_back():
    import torch

    from stages.base import one_thread_on_cpu

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread_on_cpu("cpu"):
            assert torch.get_num_threads() == 1
        with pytest.raises(RuntimeError), one_thread_on_cpu("cpu"):
            raise RuntimeError("a failing model call")
        assert torch.get_num_threads() == 2
        with one_thread_on_cpu("cuda:0"):  # on a GPU the CPU threads feed it: left as they are
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)
