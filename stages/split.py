"""split: cut a file into parts, either every --chunk_duration seconds or at pauses between words.

Time split copies the samples block by block in the file's own precision, so the parts joined are the
original samples exactly and memory does not grow with file length.

Word-boundary split transcribes one window at a time: the window reaches 15% past the target length plus a
margin, or further for as many more cuts as fit in Whisper's own 30 s (shorter audio is padded to 30 s), or to
the end of the file when that fits. The cut goes into the widest pause between two words within +-15% of the
target (at the quietest 10 ms there); further cuts come from the same window while their range and margin lie
inside it, then the next window starts at the last cut. Each part keeps the words of the window that covered
it, so every word lands in exactly one part, and memory stays bounded for files of any length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from loaders.asr import Word, words_text
from audio_io import AudioWriter, as_float, open_audio, read_frames, write_json
from model_manager import ModelUnavailable
from options import Option, positive
from stages.base import MODEL_SAMPLE_RATE, FileContext, Output, Part, Stage, resample

TOLERANCE = 0.15  # a word-boundary cut lies within +-15% of the target duration
WINDOW_MARGIN = 2.0  # seconds of audio past the latest allowed cut, so the last words there are whole
WHISPER_WINDOW = 30.0  # seconds Whisper's encoder sees at once
BLOCK_SECONDS = 30


@dataclass
class Window:
    """One transcription: where it starts and ends (source frames), its words and 16 kHz audio (times in seconds
    from its start)."""
    start: int
    end: int
    words: list[Word]
    audio16k: np.ndarray


@dataclass
class Cut:
    frame: int  # end of the part, in source frames
    words: list[Word]  # the part's words, times in the original file


def _word_boundary(config) -> bool:
    return config.split_method == "word_boundary"


class Split(Stage):
    name = "split"
    summary = "cut files into parts, by time or at pauses between words"
    options = (
        Option("split_method", "time", "cut every --chunk_duration seconds, or at pauses between words",
               choices=("time", "word_boundary"), question="Split method (time / word_boundary)"),
        Option("chunk_duration", 300.0, "target part length in seconds", positive(float),
               question="Chunk duration in seconds"),
    )
    outputs = {"split": Output("parts", ".wav"),
               "transcript": Output("transcripts", ".json", optional=True, when=_word_boundary)}
    changes_audio = True
    manifest_fields = ("text",)
    # measured real-time factors: time split copies samples; word_boundary is the speech recognition's
    RATES = {"time": 0.000, "faster-whisper": 0.115, "openai-whisper": 0.239}

    @classmethod
    def describe(cls, config) -> str:
        return (f"{config.split_method}, {config.chunk_duration:g} s"
                + (f", {config.asr_backend} {config.whisper_model}" if _word_boundary(config) else ""))

    @classmethod
    def real_time_factor(cls, config) -> float:
        return cls.RATES[config.asr_backend if _word_boundary(config) else "time"]

    @classmethod
    def locate_models(cls, config, models) -> tuple[str, str | None]:
        if not _word_boundary(config):
            return "no model (time split)", None
        try:
            kind, source = models.whisper_source(config.whisper_model, config.asr_backend)
        except ModelUnavailable as error:
            return "no model: time split instead of word_boundary", str(error)
        return f"{config.asr_backend} {config.whisper_model} " + (
            "(downloaded)" if kind == "download" else f"from {source}"), None

    @staticmethod
    def chunk_frames(config, sample_rate: int) -> int:
        return max(1, round(config.chunk_duration * sample_rate))

    @classmethod
    def time_parts(cls, config, frames: int, sample_rate: int) -> int:
        """How many parts a time split makes of a file (a word-boundary split makes about as many)."""
        return max(1, math.ceil(frames / cls.chunk_frames(config, sample_rate)))

    @staticmethod
    def settings(config) -> dict:
        values = {"method": config.split_method, "chunk_duration": config.chunk_duration}
        if config.split_method == "word_boundary":
            values.update(asr_backend=config.asr_backend, whisper_model=config.whisper_model, language=config.language)
            if config.asr_compute_type != "auto":  # auto stays out, so earlier runs' fingerprints still match
                values["asr_compute_type"] = config.asr_compute_type
        return values

    def run(self, whole: Part, ctx: FileContext) -> Iterator[Part]:
        ctx.stage_info[self.name] = {"method": self.config.split_method, "chunk_duration": self.config.chunk_duration}
        transcriber = None  # loaded when the first part must be cut at a word boundary
        window = None  # the transcription the next cuts come from
        word_cuts = self.config.split_method == "word_boundary"
        chunk = self.chunk_frames(self.config, whole.sample_rate)
        first, stop = ctx.shard or (0, None)  # shards exist for time splits only: part i starts at i * chunk
        start, index = first * chunk, first
        while start < whole.frames and (stop is None or index < stop):
            earlier = ctx.earlier.get(index)
            if earlier and earlier.get("start_frame") == start and self.name in earlier["reusable"]:
                part = self._restore_part(whole, earlier, ctx)
                yield part
                start, index = start + part.frames, index + 1
                continue
            if word_cuts and transcriber is None:
                transcriber = self._transcriber(ctx)
                word_cuts = transcriber is not None
            cut = None
            if word_cuts:
                try:
                    cut, window = self._word_cut(whole, start, chunk, ctx, window)
                except Exception as error:  # noqa: BLE001 - a failing ASR must not lose the file
                    ctx.note(f"speech recognition failed at {start / whole.sample_rate:.1f} s ({error}); "
                             "the rest of the file was split by time")
                    word_cuts = False
                    ctx.stage_info[self.name]["method"] = "word_boundary+time"
            end = cut.frame if cut else min(start + chunk, whole.frames)
            part = self._write_part(whole, index, start, end - start, ctx)
            if cut is not None:
                self._write_transcript(part, cut.words, ctx)
            yield part
            start, index = end, index + 1

    def preload(self) -> None:
        if _word_boundary(self.config):
            self.models.preload_whisper(self.config.whisper_model, self.config.asr_backend)

    def _transcriber(self, ctx: FileContext):
        try:
            transcriber = self.models.get_whisper_model(self.config.whisper_model, self.config.asr_backend)
        except ModelUnavailable as error:
            ctx.fallback(self.name, "time split", "word_boundary", str(error))
            ctx.stage_info[self.name]["method"] = "time"
            return None
        ctx.stage_info[self.name].update(asr_backend=transcriber.backend, whisper_model=self.config.whisper_model)
        return transcriber

    def _restore_part(self, whole: Part, record: dict, ctx: FileContext) -> Part:
        part = Part(record["part"], record["start_frame"], record["frames"], whole.sample_rate, whole.channels,
                    open_audio(ctx.output_root / record["outputs"]["split"], ctx.scratch_dir))
        self.restore(part, record, ctx)
        return part

    def _write_part(self, whole: Part, index: int, start: int, frames: int, ctx: FileContext) -> Part:
        part = Part(index, start, frames, whole.sample_rate, whole.channels, whole.audio, whole.audio_start + start)
        path = self.output_path(ctx, "split", part)
        block = BLOCK_SECONDS * whole.sample_rate
        with AudioWriter(path, whole.sample_rate, whole.channels, whole.audio.write_subtype) as writer:
            for samples in part.blocks(block):
                writer.write(samples)
        part.set_audio(open_audio(path, ctx.scratch_dir))
        part.outputs["split"] = ctx.relative(path)
        return part

    def _write_transcript(self, part: Part, words: list[Word], ctx: FileContext) -> None:
        path = self.output_path(ctx, "transcript", part)
        text = words_text(words)
        write_json(path, {"offset": round(part.offset, 6), "duration": round(part.duration, 6), "text": text,
                          "words": [word.to_dict() for word in words]})
        part.outputs["transcript"] = ctx.relative(path)
        part.fields["text"] = text

    def _word_cut(self, whole: Part, start: int, chunk: int, ctx: FileContext,
                  window: Window | None) -> tuple[Cut, Window]:
        """The part that begins at `start`: from `window` when it covers the part's cut range and margin (or
        reaches the end of the file), else from a new transcription that begins at `start`."""
        rate = whole.sample_rate
        remaining = whole.frames - start
        last = remaining <= round(chunk * (1 + TOLERANCE))
        needed = start + (remaining if last else min(remaining, round(chunk * (1 + TOLERANCE) + WINDOW_MARGIN * rate)))
        if window is None or not window.start <= start or window.end < needed:
            per_cut, whisper = needed - start, round(WHISPER_WINDOW * rate)
            # To the end when that fits in Whisper's 30 s; else as many whole cuts as fit in 30 s (at least one):
            # longer windows cost more decoding and re-transcribe more after the last cut.
            more_cuts = max(0, whisper - per_cut) // chunk
            frames = remaining if remaining <= whisper else min(remaining, per_cut + more_cuts * chunk)
            audio16k = resample_np(as_float(read_frames(whole.audio, whole.audio_start + start, frames)).mean(axis=1),
                                   rate)

            def transcribe(device: str, reduced: bool):
                model = self.models.get_whisper_model(self.config.whisper_model, self.config.asr_backend, device)
                return model.transcribe(audio16k)

            words, _ = self.models.gpu.run_with_fallback(transcribe, "speech recognition", on_fallback=ctx.note)
            window = Window(start, start + frames, words, audio16k)
        skip = (start - window.start) / rate  # this part's start, in seconds from the window's start
        words = [w.shifted(-skip) for w in window.words if w.end > skip]  # not in the part before; from its start
        offset = start / rate
        if last:
            return Cut(whole.frames, [w.shifted(offset) for w in words]), window
        low, high = chunk * (1 - TOLERANCE) / rate, chunk * (1 + TOLERANCE) / rate
        cut_seconds = choose_cut(words, low, high, window.audio16k[round(skip * MODEL_SAMPLE_RATE):])
        kept = [w.shifted(offset) for w in words if w.end <= cut_seconds]
        return Cut(start + round(cut_seconds * rate), kept), window


def resample_np(audio: np.ndarray, rate: int) -> np.ndarray:
    import torch

    return resample(torch.from_numpy(np.ascontiguousarray(audio)), rate, MODEL_SAMPLE_RATE).numpy()


@dataclass
class Pause:
    width: float  # of the part of the gap inside the allowed range; 0 where one word follows another
    start: float  # where to look for the quietest point: the pause, widened by the uncertainty of Whisper's
    end: float  # word edges but never past the middle of a neighbouring word, clipped to the allowed range


MIN_PAUSE = 0.1  # narrower gaps in Whisper's word times are not pauses you can rely on
EDGE_SLACK = 0.08  # Whisper's word edges are good to about this much
SNAP = 0.15  # a silent run this close to a word edge of Whisper's is taken for the pause there


def pauses(words: list[Word], low: float, high: float) -> list[Pause]:
    """Every gap between consecutive words (and before the first, after the last) that meets [low, high]."""
    found = []
    before = [(0.0, 0.0)] + [(w.end, (w.start + w.end) / 2) for w in words]
    after = [(w.start, (w.start + w.end) / 2) for w in words] + [(float("inf"), float("inf"))]
    for (gap_start, left_middle), (gap_end, right_middle) in zip(before, after):
        if max(gap_start, low) > min(gap_end, high):
            continue
        region_start = max(gap_start - EDGE_SLACK, left_middle, low) if gap_start > 0 else low
        region_end = min(gap_end + EDGE_SLACK, right_middle, high)
        if region_end > region_start:
            found.append(Pause(min(gap_end, high) - max(gap_start, low), region_start, region_end))
    return found


def choose_cut(words: list[Word], low: float, high: float, audio16k: np.ndarray) -> float:
    """Seconds from the window start where the part ends: in the widest pause between words in [low, high],
    at its quietest 30 ms (Whisper's word edges are good to ~0.1 s; the silence itself is where to cut).

    Where Whisper's times show no pause there, a silent run of the audio next to a word edge is taken (Whisper
    sometimes runs a word over a pause), and failing that the quietest junction between two words.
    """
    words = sorted((w for w in words if w.end > w.start), key=lambda w: w.start)
    merged: list[Word] = []  # Whisper's word times can overlap by a few ms; merge so that gaps are real
    for word in words:
        if merged and word.start < merged[-1].end:
            merged[-1] = Word(merged[-1].word + word.word, merged[-1].start, max(merged[-1].end, word.end), 0.0)
        else:
            merged.append(word)
    candidates = pauses(merged, low, high)
    if not candidates:  # a single word covers the whole range (not seen in practice)
        return quietest_point(audio16k, low, high)[0]
    real = [pause for pause in candidates if pause.width >= MIN_PAUSE]
    if real:
        widest = max(real, key=lambda pause: pause.width)
        return quietest_point(audio16k, widest.start, widest.end)[0]
    edges = [t for w in merged for t in (w.start, w.end)]
    near_edge = [run for run in silent_runs(audio16k, low, high)
                 if min(abs(t - min(max(t, run[0]), run[1])) for t in edges) <= SNAP]
    if near_edge:
        start, end = max(near_edge, key=lambda run: run[1] - run[0])
        return quietest_point(audio16k, start, end)[0]
    return min((quietest_point(audio16k, pause.start, pause.end) for pause in candidates), key=lambda x: x[1])[0]


def silent_runs(audio16k: np.ndarray, low: float, high: float, frame: float = 0.01,
                shortest: float = 0.03) -> list[tuple[float, float]]:
    """Runs of at least `shortest` seconds in [low, high] whose level is near the window's floor, far below its
    speech."""
    hop = int(frame * MODEL_SAMPLE_RATE)
    frames = len(audio16k) // hop
    if frames < 10:
        return []
    power = (audio16k[: frames * hop].reshape(frames, hop).astype(np.float64) ** 2).mean(axis=1)
    level = 10 * np.log10(np.convolve(power, np.ones(3) / 3, mode="same") + 1e-12)
    floor, speech = np.percentile(level, 5), np.median(np.sort(level)[frames // 2:])
    if speech - floor < 15:  # no clear silence here (noise, music): leave it to the word times
        return []
    quiet = level < floor + 0.3 * (speech - floor)
    runs, begin = [], None
    for index in range(int(low / frame), min(frames, int(high / frame) + 1)):
        if quiet[index] and begin is None:
            begin = index
        elif not quiet[index] and begin is not None:
            runs.append((begin, index))
            begin = None
    if begin is not None:
        runs.append((begin, min(frames, int(high / frame) + 1)))
    return [(max(low, a * frame), min(high, b * frame)) for a, b in runs if b - a >= round(shortest / frame)]


def quietest_point(audio16k: np.ndarray, start: float, end: float, frame: float = 0.01) -> tuple[float, float]:
    """(time, power) at the centre of the quietest 30 ms in [start, end]: Whisper's word edges are only good
    to ~0.1 s, the silence itself is where the cut belongs."""
    hop = int(frame * MODEL_SAMPLE_RATE)
    first, last = int(start * MODEL_SAMPLE_RATE), int(end * MODEL_SAMPLE_RATE)
    segment = audio16k[first:last]
    frames = len(segment) // hop
    if frames < 3:
        middle = (start + end) / 2
        around = audio16k[max(0, int((middle - 0.015) * MODEL_SAMPLE_RATE)): int((middle + 0.015) * MODEL_SAMPLE_RATE)]
        return middle, float((around ** 2).mean()) if len(around) else 0.0
    power = (segment[: frames * hop].reshape(frames, hop) ** 2).mean(axis=1)
    smoothed = np.convolve(power, np.ones(3) / 3, mode="valid")  # centre of frames i..i+2 is frame i+1
    quietest = int(np.argmin(smoothed))
    return start + (quietest + 1.5) * frame, float(smoothed[quietest])
