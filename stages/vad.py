"""vad: Silero VAD finds speech; the part's speech is written without the silence between.

Speech segments are found on 16 kHz mono in blocks of ten minutes, so a long unsplit file is never held in
memory at once; segments that touch a block edge are joined again. The speech-only audio is cut from the part's
own audio, at its own rate and channel count. Segment times are on the original file's timeline.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from audio_io import AudioWriter, as_float, iter_blocks, write_json
from options import Option, fraction, non_negative, positive
from stages.base import MODEL_SAMPLE_RATE, FileContext, Output, Part, Stage, one_thread_on_cpu, resample

BLOCK_SECONDS = 600


class VoiceActivity(Stage):
    name = "vad"
    summary = "find the speech and write it without the silences"
    options = (
        Option("vad_threshold", 0.5, "Silero speech probability threshold", fraction),
        Option("min_speech_ms", 250, "shorter speech bursts are dropped", positive(int)),
        Option("min_silence_ms", 100, "shorter pauses stay inside speech", positive(int)),
        Option("speech_pad_ms", 30, "padding kept around each speech segment", non_negative(int)),
    )
    outputs = {"speech": Output("speech", ".wav"), "speech_segments": Output("speech", ".json")}
    manifest_fields = ("speech_duration",)

    @classmethod
    def describe(cls, config) -> str:
        return f"silero, threshold {config.vad_threshold:g}"

    @classmethod
    def real_time_factor(cls, config) -> float:
        return 0.011  # Silero, measured

    @classmethod
    def locate_models(cls, config, models) -> tuple[str, str | None]:
        return "silero-vad (its weights ship in the silero-vad package)", None

    @staticmethod
    def settings(config) -> dict:
        return {"threshold": config.vad_threshold, "min_speech_ms": config.min_speech_ms,
                "min_silence_ms": config.min_silence_ms, "speech_pad_ms": config.speech_pad_ms}

    def run(self, part: Part, ctx: FileContext) -> Iterator[Part]:
        ctx.stage_info.setdefault(self.name, {}).update(model="silero-vad", threshold=self.config.vad_threshold)
        segments = self.speech_segments(part)  # (start, end) in part frames
        audio_path = self.output_path(ctx, "speech", part)
        block = 30 * part.sample_rate
        with AudioWriter(audio_path, part.sample_rate, part.channels, part.audio.write_subtype) as writer:
            for start, end in segments:
                for samples in _read_range(part, start, end, block):
                    writer.write(samples)
        speech_frames = sum(end - start for start, end in segments)
        seconds = [{"start": round((part.start_frame + s) / part.sample_rate, 3),
                    "end": round((part.start_frame + e) / part.sample_rate, 3)} for s, e in segments]
        json_path = self.output_path(ctx, "speech_segments", part)
        write_json(json_path, {"offset": round(part.offset, 6), "duration": round(part.duration, 6),
                               "speech_duration": round(speech_frames / part.sample_rate, 3), "segments": seconds})
        part.outputs["speech"] = ctx.relative(audio_path)
        part.outputs["speech_segments"] = ctx.relative(json_path)
        part.fields["speech_duration"] = round(speech_frames / part.sample_rate, 3)
        part.fields["speech_segments"] = seconds
        yield part

    def preload(self) -> None:
        self.models.get_vad_model()

    def speech_segments(self, part: Part) -> list[tuple[int, int]]:
        import torch

        model = self.models.get_vad_model()  # first: it imports silero_vad and undoes the import's 1-thread setting
        from silero_vad import get_speech_timestamps

        scale = part.sample_rate / MODEL_SAMPLE_RATE
        found: list[tuple[int, int]] = []
        block_frames = BLOCK_SECONDS * part.sample_rate
        for block_index, samples in enumerate(part.blocks(block_frames)):
            mono = resample(torch.from_numpy(as_float(samples).mean(axis=1)), part.sample_rate, MODEL_SAMPLE_RATE)
            with one_thread_on_cpu("cpu"):  # Silero always runs on the CPU
                stamps = get_speech_timestamps(
                    mono, model, threshold=self.config.vad_threshold, sampling_rate=MODEL_SAMPLE_RATE,
                    min_speech_duration_ms=self.config.min_speech_ms,
                    min_silence_duration_ms=self.config.min_silence_ms, speech_pad_ms=self.config.speech_pad_ms)
            first = block_index * block_frames
            found.extend((first + round(s["start"] * scale), first + round(s["end"] * scale)) for s in stamps)
        return merge_segments(found, round(self.config.min_silence_ms / 1000 * part.sample_rate), part.frames)


def merge_segments(segments: list[tuple[int, int]], min_gap: int, limit: int) -> list[tuple[int, int]]:
    """Join segments closer than min_gap (those split by a block edge, or overlapping after padding)."""
    merged: list[list[int]] = []
    for start, end in sorted(segments):
        start, end = max(0, start), min(limit, end)
        if end <= start:
            continue
        if merged and start - merged[-1][1] < min_gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def _read_range(part: Part, start: int, end: int, block: int) -> Iterator[np.ndarray]:
    return iter_blocks(part.audio, part.audio_start + start, end - start, block)
