"""transcribe: who said which words, as a transcript with speakers (<stem>.json, .srt, .vtt, .txt).

Each part's words (start, end, probability; seconds on the original file's timeline) go to words/part_NNNN.json:
- taken from the word_boundary split when it ran (no second Whisper pass);
- else from Whisper, in clips of at most 30 s (its window) cut near every CLIP_GRID seconds of the file's
  timeline, not where the part begins: a split file is decoded in the unsplit file's clips, so it gets its words.
  A clip that the part's cut goes through is decoded whole (with the input beyond the cut), and the part keeps
  the words whose middle lies inside it: every word lands in exactly one part. When vad ran, only its speech is
  decoded. Clips are decoded --asr_batch_size at a time.
When the file's last part is done (and diar's finish wrote the exclusive RTTM), each word gets the speaker of the
exclusive turn that overlaps it most, else of the nearest turn within NEAREST_TURN seconds, else "unknown".
Segments are sentences, cut where the speaker changes (--speaker_turns word) or given to the speaker who says
most of them (sentence): a segment never carries two speakers.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from audio_io import write_json, write_text
from loaders.asr import Word, words_text
from model_manager import ModelUnavailable
from options import Option, positive
from stages.base import MODEL_SAMPLE_RATE, FileContext, Output, Part, Stage, with_context
from stages.diarize import Turn, read_rttm
from stages.split import quietest_point

CLIP_GRID = 22.0  # seconds: clips are cut near every multiple of this on the file's timeline ...
GRID_SLACK = 4.0  # ... at the quietest point within this of it: clips of at most 30 s, Whisper's window
TRANSCRIBE_MARGIN = CLIP_GRID + GRID_SLACK  # seconds heard beyond a cut: the whole grid interval it falls in
NEAREST_TURN = 0.5  # a word in no turn goes to a turn at most this far away
SENTENCE_END = (".", "?", "!", "。", "？", "！")
SENTENCE_PAUSE = 1.0  # a pause this long ends a sentence even without punctuation
FLICKER_WORDS = 2  # a speaker's run this short inside a sentence is taken for a word-timing error ...
FLICKER_PAUSE = 0.3  # ... unless a pause this long separates it from its neighbour
UNKNOWN = "unknown"
FORMATS = ("json", "srt", "vtt", "txt")


@dataclass
class Segment:
    speaker: str | None  # None when the run had no diarization
    words: list[Word]

    @property
    def start(self) -> float:
        return self.words[0].start

    @property
    def end(self) -> float:
        return self.words[-1].end

    @property
    def text(self) -> str:
        return words_text(self.words)


class Transcribe(Stage):
    name = "transcribe"
    summary = "who said which words: transcript with speakers (json, srt, vtt, txt)"
    options = (
        Option("output_format", "all", "transcript files to write", choices=("all", *FORMATS)),
        Option("speaker_turns", "word", "word: a sentence is cut where the speaker changes; sentence: each "
               "sentence goes to the speaker of most of its words", choices=("word", "sentence")),
        Option("asr_batch_size", 8, "speech clips decoded at once (faster-whisper, when vad ran); 1 decodes one "
               "after another", positive(int)),
    )
    outputs = {"words": Output("words", ".json")}
    file_outputs = tuple(f"<stem>.{kind}" for kind in FORMATS)
    manifest_fields = ("text",)
    by_default = False

    @classmethod
    def describe(cls, config) -> str:
        return f"{config.asr_backend} {config.whisper_model}, speakers per {config.speaker_turns}"

    @classmethod
    def real_time_factor(cls, config) -> float:
        return 0.10  # faster-whisper base int8 on the speech, batched, measured (bench/transcript.py)

    @classmethod
    def locate_models(cls, config, models) -> tuple[str, str | None]:
        kind, source = models.whisper_source(config.whisper_model, config.asr_backend)  # ModelUnavailable: no model
        return f"{config.asr_backend} {config.whisper_model} " + (
            "(downloaded)" if kind == "download" else f"from {source}"), None

    @staticmethod
    def settings(config) -> dict:
        values = {"asr_backend": config.asr_backend, "whisper_model": config.whisper_model,
                  "language": config.language, "asr_compute_type": config.asr_compute_type,
                  "asr_batch_size": config.asr_batch_size}
        if "vad" in config.steps:  # the speech it decodes is what vad found
            from stages.vad import VoiceActivity

            values["vad"] = VoiceActivity.settings(config)
        return values

    @staticmethod
    def finish_settings(config) -> dict:
        return {"output_format": config.output_format, "speaker_turns": config.speaker_turns}

    def run(self, part: Part, ctx: FileContext) -> Iterator[Part]:
        info = ctx.stage_info.setdefault(self.name, {})
        if "transcript" in part.outputs:  # the word_boundary split's words
            words = [Word(**word) for word in _read_json(ctx, part.outputs["transcript"])["words"]]
            info["words_from"] = "split"
        else:
            words = self._recognise(part, ctx)
            if words is None:
                yield part
                return
            info["words_from"] = f"{self.config.asr_backend} {self.config.whisper_model}"
        path = self.output_path(ctx, "words", part)
        write_json(path, {"offset": round(part.offset, 6), "duration": round(part.duration, 6),
                          "text": words_text(words), "words": [word.to_dict() for word in words]})
        part.outputs["words"] = ctx.relative(path)
        part.fields["text"] = words_text(words)
        yield part

    def preload(self) -> None:
        self.models.preload_whisper(self.config.whisper_model, self.config.asr_backend)

    def _recognise(self, part: Part, ctx: FileContext) -> list[Word] | None:
        try:
            self.models.get_whisper_model(self.config.whisper_model, self.config.asr_backend)
        except ModelUnavailable as error:
            ctx.skip(self.name, str(error))
            return None
        window_start, audio = with_context(part, ctx.source_info, TRANSCRIBE_MARGIN)
        audio = audio.numpy()
        own = (part.offset, part.offset + part.duration)
        speech = _speech_segments(part, ctx)
        if speech is None:  # no vad: all of the part
            speech = [own]
        clips = speech_clips(speech, own, window_start, audio)

        def recognise(device: str, reduced: bool) -> list[Word]:
            model = self.models.get_whisper_model(self.config.whisper_model, self.config.asr_backend, device)
            return model.transcribe_clips(audio, clips, 1 if reduced else self.config.asr_batch_size)

        found = self.models.gpu.run_with_fallback(recognise, "speech recognition", on_fallback=ctx.note)
        words = [word.shifted(window_start) for word in found]
        return [word for word in words if own[0] <= (word.start + word.end) / 2 < own[1]]

    def finish(self, ctx: FileContext) -> None:
        segments = transcript_segments(ctx, self.config)
        if segments is None:
            return
        formats = FORMATS if self.config.output_format == "all" else (self.config.output_format,)
        for kind in formats:
            write_text(ctx.whole_file_path(f"<stem>.{kind}"), WRITERS[kind](segments, ctx))
        words = [word for segment in segments for word in segment.words]
        unknown = sum(len(s.words) for s in segments if s.speaker == UNKNOWN)
        ctx.stage_info[self.name].update(
            words=len(words), segments=len(segments), unknown_words=unknown,
            transcript=ctx.relative(ctx.whole_file_path(f"<stem>.{formats[0]}")))
        if unknown:
            ctx.note(f"transcribe: {unknown} of {len(words)} words are in no speaker turn (within "
                     f"{NEAREST_TURN:g} s): their speaker is {UNKNOWN}")


def _read_json(ctx: FileContext, relative: str) -> dict:
    return json.loads((ctx.output_root / relative).read_text(encoding="utf-8"))


def _speech_segments(part: Part, ctx: FileContext) -> list[tuple[float, float]] | None:
    """What vad found in the part (seconds on the file's timeline); None when vad did not run."""
    if "speech_segments" in part.fields:
        found = part.fields["speech_segments"]
    elif "speech_segments" in part.outputs:  # restored from an earlier run
        found = _read_json(ctx, part.outputs["speech_segments"])["segments"]
    else:
        return None
    return [(segment["start"], segment["end"]) for segment in found]


def speech_clips(speech: list[tuple[float, float]], own: tuple[float, float], window_start: float,
                 audio: np.ndarray) -> list[tuple[float, float]]:
    """The part's speech as clips of at most 30 s, in seconds from window_start. Clips are cut on a grid of the
    file's timeline (grid_point), not where the part begins, so that a split file's clips are the unsplit file's:
    Whisper decodes the same audio to the same words. Each clip covers the speech of its grid interval (vad's,
    inside the part; in the margins beyond a cut, all of the interval, so that the cut words are heard whole);
    an interval without speech is not decoded."""
    window_end = window_start + len(audio) / MODEL_SAMPLE_RATE
    first, last = int(own[0] // CLIP_GRID), int(np.ceil(own[1] / CLIP_GRID))
    bounds = [grid_point(k, audio, window_start, window_end) for k in range(first, last + 1)]
    spans = [(start, end) for start, end in speech if end > own[0] and start < own[1]]
    if own[0] > window_start:
        spans.insert(0, (window_start, own[0]))
    if own[1] < window_end:
        spans.append((own[1], window_end))
    clips = []
    for low, high in zip(bounds, bounds[1:]):
        inside = [(max(start, low), min(end, high)) for start, end in spans if end > low and start < high]
        if inside:
            clips.append((inside[0][0] - window_start, inside[-1][1] - window_start))
    return [(start, end) for start, end in clips if end > start]


def grid_point(k: int, audio: np.ndarray, window_start: float, window_end: float) -> float:
    """The k-th clip boundary on the file's timeline: the quietest 30 ms within GRID_SLACK of k * CLIP_GRID, found
    in that stretch of audio alone (so every run that holds it finds the same point); the window's edges at its
    ends."""
    middle = k * CLIP_GRID
    if middle <= window_start or middle >= window_end:
        return min(max(middle, window_start), window_end)
    low, high = max(window_start, middle - GRID_SLACK), min(window_end, middle + GRID_SLACK)
    local = audio[round((low - window_start) * MODEL_SAMPLE_RATE): round((high - window_start) * MODEL_SAMPLE_RATE)]
    return low + quietest_point(local, 0.0, high - low)[0]


def file_words(ctx: FileContext) -> list[Word]:
    """Every word of the file, in time order, from the parts' word files."""
    words = []
    for part in sorted(ctx.parts, key=lambda part: part.index):
        if "words" in part.outputs:
            words += [Word(**word) for word in _read_json(ctx, part.outputs["words"])["words"]]
    return sorted(words, key=lambda word: (word.start, word.end))


def exclusive_turns(ctx: FileContext) -> list[Turn] | None:
    """diar's exclusive turns (at most one speaker at a time); None when diar did not run on this file."""
    rttm = ctx.stage_info.get("diar", {}).get("exclusive_rttm")
    return None if rttm is None else sorted(read_rttm(ctx.output_root / rttm))


def near(turns: list[Turn], ends: list[float], word: Word) -> list[Turn]:
    """The time-ordered, non-overlapping turns that overlap the word or end within NEAREST_TURN of it."""
    first = bisect.bisect_left(ends, word.start - NEAREST_TURN)
    last = first
    while last < len(turns) and turns[last].start <= word.end + NEAREST_TURN:
        last += 1
    return turns[first:last]


def word_speaker(word: Word, turns: list[Turn]) -> str:
    """The turn overlapping the word most; else the nearest within NEAREST_TURN; else UNKNOWN."""
    best, best_overlap, nearest, nearest_gap = None, 0.0, None, NEAREST_TURN
    for turn in turns:
        overlap = min(word.end, turn.end) - max(word.start, turn.start)
        if overlap > best_overlap:
            best, best_overlap = turn.speaker, overlap
        gap = max(turn.start - word.end, word.start - turn.end)  # <= 0 for a zero-length word inside the turn
        if gap <= nearest_gap:
            nearest, nearest_gap = turn.speaker, gap
    return best or nearest or UNKNOWN


def sentences(words: list[Word]) -> list[list[Word]]:
    """Words grouped into sentences: ended by sentence punctuation or by a pause of SENTENCE_PAUSE."""
    found: list[list[Word]] = []
    for word in words:
        if not found or found[-1][-1].word.strip().endswith(SENTENCE_END) \
                or word.start - found[-1][-1].end >= SENTENCE_PAUSE:
            found.append([])
        found[-1].append(word)
    return found


def transcript_segments(ctx: FileContext, config) -> list[Segment] | None:
    """The file's speaker-attributed segments, as transcribe's finish writes them (utterances reads them too);
    None when no part was transcribed."""
    if not any("words" in part.outputs for part in ctx.parts):
        return None
    return attribute(file_words(ctx), exclusive_turns(ctx), config.speaker_turns)


def attribute(words: list[Word], turns: list[Turn] | None, speaker_turns: str) -> list[Segment]:
    """Sentences cut where the speaker changes ("word"), or each given to its majority speaker ("sentence");
    without turns (no diarization) the sentences have no speaker."""
    segments = []
    ends = [turn.end for turn in turns or []]  # exclusive turns do not overlap: sorted by start, sorted by end
    for sentence in sentences(words):
        if turns is None:
            segments.append(Segment(None, sentence))
            continue
        speakers = [word_speaker(word, near(turns, ends, word)) for word in sentence]
        if speaker_turns == "sentence":
            speakers = [_majority(sentence, speakers)] * len(sentence)
        else:
            speakers = _without_flicker(sentence, speakers)
        for index, (word, speaker) in enumerate(zip(sentence, speakers)):
            if index and segments[-1].speaker == speaker:
                segments[-1].words.append(word)
            else:
                segments.append(Segment(speaker, [word]))
    return segments


def _without_flicker(words: list[Word], speakers: list[str]) -> list[str]:
    """A run of at most FLICKER_WORDS words of one speaker inside a sentence, joined to a neighbouring run without a
    pause of FLICKER_PAUSE, takes the speaker of its longest such neighbour: Whisper's word times are good to
    about 0.1-0.3 s, so a word or two at a turn change lands on the wrong side of it (bench/transcript.py)."""
    speakers = list(speakers)
    while True:
        runs = [[0, 1]]  # [first word, end] of each run of one speaker
        for index in range(1, len(words)):
            if speakers[index] == speakers[index - 1]:
                runs[-1][1] += 1
            else:
                runs.append([index, index + 1])
        if len(runs) < 2:
            return speakers
        changed = False
        for k, (first, end) in enumerate(runs):
            if end - first > FLICKER_WORDS:
                continue
            joined = [run for run in runs[max(0, k - 1): k + 2] if run is not runs[k]
                      and words[max(run[0], first)].start - words[min(run[1], end) - 1].end < FLICKER_PAUSE]
            if joined:
                longest = max(joined, key=lambda run: run[1] - run[0])
                speakers[first:end] = [speakers[longest[0]]] * (end - first)
                changed = True
                break
        if not changed:
            return speakers


def _majority(words: list[Word], speakers: list[str]) -> str:
    """The speaker who says most of the sentence (by time; unknown only when no word has a speaker)."""
    spoken: dict[str, float] = {}
    for word, speaker in zip(words, speakers):
        if speaker != UNKNOWN:
            spoken[speaker] = spoken.get(speaker, 0.0) + max(word.end - word.start, 1e-3)
    return max(spoken, key=spoken.get) if spoken else UNKNOWN


# ---- writers: segments -> the text of one transcript file ----

def _json(segments: list[Segment], ctx: FileContext) -> str:
    return json.dumps({
        "source": str(ctx.source), "speakers": sorted({s.speaker for s in segments if s.speaker}),
        "segments": [{"speaker": s.speaker, "start": s.start, "end": s.end, "text": s.text,
                      "words": [{**word.to_dict(), "speaker": s.speaker} for word in s.words]} for s in segments],
    }, indent=2, ensure_ascii=False) + "\n"


def _subtitles(kind: str):
    def write(segments: list[Segment], ctx: FileContext) -> str:
        import pysubs2

        subtitles = pysubs2.SSAFile()
        for segment in segments:
            text = f"[{segment.speaker}] {segment.text}" if segment.speaker else segment.text
            if kind == "vtt":  # WebVTT reads & and < as markup
                text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            subtitles.events.append(pysubs2.SSAEvent(start=round(segment.start * 1000),
                                                     end=round(segment.end * 1000), text=text))
        return subtitles.to_string(kind)
    return write


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(seconds, 60)
    return f"{int(minutes // 60):02d}:{int(minutes % 60):02d}:{seconds:05.2f}"


def _txt(segments: list[Segment], ctx: FileContext) -> str:
    """One line per speaker turn: consecutive segments of one speaker joined."""
    turns: list[Segment] = []
    for segment in segments:
        if turns and turns[-1].speaker == segment.speaker:
            turns[-1] = Segment(segment.speaker, turns[-1].words + segment.words)
        else:
            turns.append(segment)
    return "".join(f"[{_clock(t.start)} - {_clock(t.end)}] " + (f"{t.speaker}: " if t.speaker else "") + t.text + "\n"
                   for t in turns)


WRITERS = {"json": _json, "srt": _subtitles("srt"), "vtt": _subtitles("vtt"), "txt": _txt}
