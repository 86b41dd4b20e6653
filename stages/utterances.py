"""utterances: clean single-speaker clips with their text and a quality score, in the manifests trainers read.

From the file's speaker-attributed words (transcribe's segments): consecutive words of one speaker are joined
while the pause between them is under --max_pause; an utterance longer than --max_utterance is cut at its widest
pause (again, until every piece fits); shorter than --min_utterance it is dropped. Cuts fall only between words:
each clip begins and ends PAUSE_KEPT into the widest silence within EDGE_REACH outside its first and last word,
never past the middle of the word before or after it; where there is no silence, between Whisper's word times.
Words in overlapped speech (two diarized speakers
at once) or without a speaker break an utterance and are left out (--keep_overlap keeps overlapped ones).

The audio is the part audio the stages before left (denoised when denoise ran, else the split parts or the
input itself: exactly the input's samples), mono, at the input's rate or --utterance_sample_rate. Every clip is
scored with DNSMOS P.835 (SIG, BAK, OVRL); --min_dnsmos drops those under an OVRL score.

Each file's utterances go to utterances/<file key>/<speaker>/<stem>_<nnnnn>.wav, listed in <stem>.utterances.jsonl
in its folder; after the batch, the run's utterances.jsonl (NeMo manifest) and utterances/metadata.jsonl (Hugging
Face audiofolder) are rebuilt from those lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from audio_io import AudioWriter, as_float, read_frames, read_jsonl, write_jsonl
from layout import AUDIOFOLDER_METADATA, UTTERANCE_MANIFEST, UTTERANCES, fitting_name, remove
from loaders.asr import Word, words_text
from model_manager import ModelUnavailable
from options import Option, non_negative, positive
from stages.base import MODEL_SAMPLE_RATE, FileContext, Part, Stage, resample
from stages.split import EDGE_SLACK, silent_runs
from stages.diarize import Turn, read_rttm
from stages.transcribe import UNKNOWN, transcript_segments

EDGE_REACH = 1.0  # seconds beyond its first and last word where a clip may begin and end (Whisper's last word
# of a sentence can end well before the speech does)
PAUSE_KEPT = 0.1  # seconds of the pause kept before and after the speech
SHORTEST_PAUSE = 0.1  # a shorter silence may be the closure of a stop consonant inside a word
MANIFEST_FIELDS = ("audio_filepath", "duration", "text", "speaker", "source", "offset", "dnsmos_sig", "dnsmos_bak",
                   "dnsmos_ovrl")


@dataclass
class Utterance:
    speaker: str
    words: list[Word]
    start_region: tuple[float, float] = (0.0, 0.0)  # where the clip may begin, seconds on the file's timeline
    end_region: tuple[float, float] = (0.0, 0.0)  # ... and end
    start: float = 0.0  # where it begins and ends
    end: float = 0.0

    @property
    def spoken(self) -> float:
        return self.words[-1].end - self.words[0].start


class Utterances(Stage):
    name = "utterances"
    summary = "single-speaker clips with text and DNSMOS quality (NeMo manifest, Hugging Face audiofolder)"
    options = (
        Option("max_pause", 0.6, "a longer pause between one speaker's words ends an utterance", positive(float)),
        Option("max_utterance", 20.0, "longer utterances are cut at their widest pause (seconds)", positive(float)),
        Option("min_utterance", 1.0, "shorter utterances are dropped (seconds)", non_negative(float)),
        Option("keep_overlap", False, "keep words spoken while another speaker talks", kind="flag"),
        Option("utterance_sample_rate", None, "sample rate of the clips", positive(int), default_text="the input's"),
        Option("min_dnsmos", None, "drop utterances whose DNSMOS OVRL is lower (Emilia-Pipe keeps >= 3.0)",
               positive(float), default_text="keep all"),
    )
    file_outputs = ("<stem>.utterances.jsonl",)
    shared_outputs = (UTTERANCES,)
    by_default = False

    @classmethod
    def describe(cls, config) -> str:
        return (f"pause < {config.max_pause:g} s, {config.min_utterance:g}-{config.max_utterance:g} s"
                + (f", OVRL >= {config.min_dnsmos:g}" if config.min_dnsmos is not None else ""))

    @classmethod
    def real_time_factor(cls, config) -> float:
        return 0.20  # cutting and DNSMOS (most of it), measured (bench/transcript.py)

    @classmethod
    def locate_models(cls, config, models) -> tuple[str, str | None]:
        return f"DNSMOS P.835 from {models.dnsmos_source()}", None

    @staticmethod
    def check(config) -> list[str]:
        if "utterances" in config.steps and not {"diar", "transcribe"} <= set(config.steps):
            return ["--steps utterances needs diar and transcribe too: an utterance is one speaker's words"]
        return []

    @staticmethod
    def finish_settings(config) -> dict:
        return {"max_pause": config.max_pause, "max_utterance": config.max_utterance,
                "min_utterance": config.min_utterance, "keep_overlap": config.keep_overlap,
                "utterance_sample_rate": config.utterance_sample_rate, "min_dnsmos": config.min_dnsmos}

    def preload(self) -> None:
        self.models.get_dnsmos()

    def run(self, part: Part, ctx: FileContext) -> Iterator[Part]:
        yield part  # the whole file's words and speakers are known only in finish

    def finish(self, ctx: FileContext) -> None:
        segments = transcript_segments(ctx, self.config)
        diarized = ctx.stage_info.get("diar", {}).get("rttm")
        if segments is None or diarized is None:
            ctx.skip(self.name, "no speaker-attributed words (transcribe or diar did not run)")
            return
        try:
            scorer = self.models.get_dnsmos()
        except ModelUnavailable as error:
            ctx.skip(self.name, str(error))
            return
        key = ctx.relative(ctx.out_dir)
        folder = ctx.output_root / UTTERANCES / key
        remove(ctx.output_root, folder)  # an earlier run's clips of this file
        overlaps = [] if self.config.keep_overlap else overlapped(read_rttm(ctx.output_root / diarized))
        spoken = [(word, segment.speaker) for segment in segments for word in segment.words]
        found, left_out, short = self.cut(spoken, overlaps, lambda words: self._pauses(ctx, words))
        edge_regions(found, [word for word, _ in spoken])
        rate = self.config.utterance_sample_rate or ctx.source_info.sample_rate
        records, low_quality = [], 0
        for utterance in found:
            audio, native, audio16k = self._clip(ctx, utterance, rate)
            sig, bak, ovrl = scorer.score(audio16k)
            if self.config.min_dnsmos is not None and ovrl < self.config.min_dnsmos:
                low_quality += 1
                continue
            path = folder / utterance.speaker / fitting_name(ctx.file_id, f"_{len(records) + 1:05d}.wav")
            with AudioWriter(path, rate, 1, native) as writer:
                writer.write(audio[:, None])
            records.append(dict(zip(MANIFEST_FIELDS, (
                ctx.relative(path), round(len(audio) / rate, 6), words_text(utterance.words),
                f"{key}/{utterance.speaker}", str(ctx.source), round(utterance.start, 6),
                round(sig, 3), round(bak, 3), round(ovrl, 3)))))
        listing = ctx.whole_file_path(self.file_outputs[0])
        write_jsonl(listing, records)
        ctx.stage_info[self.name] = {
            "manifest": ctx.relative(listing), "utterances": len(records),
            "audio_seconds": round(sum(record["duration"] for record in records), 3),
            "dropped_short": short, "dropped_low_quality": low_quality, "words_left_out": left_out,
            "mean_dnsmos_ovrl": round(float(np.mean([r["dnsmos_ovrl"] for r in records])), 3) if records else None}

    def cut(self, words: list[tuple[Word, str]], overlaps: list[tuple[float, float]],
            pauses: Callable[[list[Word]], list[float]]) -> tuple[list[Utterance], int, int]:
        """Runs of one speaker's words with pauses under --max_pause, cut to --max_utterance, at least
        --min_utterance long; words without a speaker or in overlapped speech end a run and are left out.
        `pauses(words)` measures the pause after each word but the last (only for runs too long). Returns (utterances, words left
        out, utterances dropped as too short)."""
        runs: list[Utterance] = []
        left_out, ended, overlap = 0, True, 0
        for word, speaker in words:
            while overlap < len(overlaps) and overlaps[overlap][1] <= word.start:
                overlap += 1
            if speaker in (None, UNKNOWN) or (overlap < len(overlaps) and overlaps[overlap][0] < word.end):
                left_out, ended = left_out + 1, True
                continue
            if ended or runs[-1].speaker != speaker or word.start - runs[-1].words[-1].end >= self.config.max_pause:
                runs.append(Utterance(speaker, []))
            runs[-1].words.append(word)
            ended = False
        pieces = [piece for run in runs for piece in (
            self._fit(run, pauses(run.words)) if run.spoken > self.config.max_utterance else [run])]
        kept = [piece for piece in pieces if piece.spoken >= self.config.min_utterance]
        return kept, left_out, len(pieces) - len(kept)

    def _fit(self, run: Utterance, widths: list[float]) -> list[Utterance]:
        """The run cut at its widest pause (widths: the pause after each word but the last) until every piece is
        at most --max_utterance long."""
        if run.spoken <= self.config.max_utterance or len(run.words) < 2:
            return [run]
        cut = 1 + int(np.argmax(widths))
        return (self._fit(Utterance(run.speaker, run.words[:cut]), widths[:cut - 1])
                + self._fit(Utterance(run.speaker, run.words[cut:]), widths[cut:]))

    def _pauses(self, ctx: FileContext, words: list[Word]) -> list[float]:
        """The pause after each word but the last, measured in the audio: the silence (of at least SHORTEST_PAUSE)
        between the middles of the two words; Whisper's gap between their times only breaks ties (its word
        edges are good to about 0.1 s: it shows gaps where the speech runs on, and misses short pauses)."""
        rate = ctx.source_info.sample_rate
        begin = words[0].start
        audio16k = _to_16k(as_float(self._audio(ctx, round(begin * rate), round(words[-1].end * rate))).mean(axis=1),
                           rate)
        silences = silent_runs(audio16k, 0.0, len(audio16k) / MODEL_SAMPLE_RATE, shortest=SHORTEST_PAUSE)
        widths = []
        for left, right in zip(words, words[1:]):
            low, high = (left.start + left.end) / 2 - begin, (right.start + right.end) / 2 - begin
            silent = max((min(end, high) - max(start, low) for start, end in silences), default=0.0)
            widths.append(max(0.0, silent) + 1e-3 * max(0.0, right.start - left.end))
        return widths

    def _clip(self, ctx: FileContext, utterance: Utterance, rate: int) -> tuple[np.ndarray, str, np.ndarray]:
        """The clip's samples, mono at `rate`, the subtype to write them in, and the clip at 16 kHz mono (what
        DNSMOS scores); it begins and ends in the silence of its edge regions when there is one (utterance.start
        and .end are set to where). A mono input at its own rate is copied sample for sample."""
        source_rate = ctx.source_info.sample_rate
        first = round(utterance.start_region[0] * source_rate)
        high = utterance.end_region[1]
        around = self._audio(ctx, first, round(high * source_rate))
        around16k = _to_16k(as_float(around).mean(axis=1), source_rate)
        begin = first / source_rate
        utterance.start = edge(around16k, begin, utterance.start_region, utterance.start, end=False)
        utterance.end = edge(around16k, begin, utterance.end_region, utterance.end, end=True)
        audio = around[round(utterance.start * source_rate) - first: round(utterance.end * source_rate) - first]
        audio16k = around16k[round((utterance.start - begin) * MODEL_SAMPLE_RATE):
                             round((utterance.end - begin) * MODEL_SAMPLE_RATE)]
        utterance.start = round(utterance.start * source_rate) / source_rate  # on a sample
        subtype = ctx.parts[0].audio.write_subtype
        if audio.shape[1] == 1 and rate == source_rate:
            return audio[:, 0], subtype, audio16k
        mono = as_float(audio).mean(axis=1)
        if rate != source_rate:
            import torch

            mono = resample(torch.from_numpy(np.ascontiguousarray(mono)), source_rate, rate).numpy()
        return mono, subtype, audio16k

    @staticmethod
    def _audio(ctx: FileContext, first: int, end: int) -> np.ndarray:
        """Source frames [first, end) from the parts' current audio (denoised when denoise ran)."""
        pieces = []
        for part in sorted(ctx.parts, key=lambda part: part.start_frame):
            low, high = max(first, part.start_frame), min(end, part.start_frame + part.frames)
            if high > low:
                pieces.append(read_frames(part.audio, part.audio_start + low - part.start_frame, high - low))
        return np.concatenate(pieces)

    @classmethod
    def finish_run(cls, output: Path, reports: list[dict]) -> None:
        """utterances.jsonl (NeMo) and utterances/metadata.jsonl (audiofolder) for every file's utterances: this
        batch's files' lists, and the lines of earlier runs' other files."""
        batch = {report["source"] for report in reports}
        manifest = output / UTTERANCE_MANIFEST
        records = [record for record in read_jsonl(manifest) if record.get("source") not in batch]
        for report in reports:
            listing = report.get("stages", {}).get(cls.name, {}).get("manifest")
            if listing and report.get("status") == "done":
                records += read_jsonl(output / listing)
        write_jsonl(manifest, records)
        metadata = [{"file_name": Path(record["audio_filepath"]).relative_to(UTTERANCES).as_posix(),
                     **{key: value for key, value in record.items() if key != "audio_filepath"}} for record in records]
        write_jsonl(output / UTTERANCES / AUDIOFOLDER_METADATA, metadata)


def overlapped(turns: list[Turn]) -> list[tuple[float, float]]:
    """Where two speakers' turns overlap, as disjoint time-ordered spans."""
    turns, found = sorted(turns), []
    for i, one in enumerate(turns):
        for other in turns[i + 1:]:
            if other.start >= one.end:
                break
            if other.speaker != one.speaker:
                found.append((other.start, min(one.end, other.end)))
    merged: list[tuple[float, float]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def edge_regions(utterances: list[Utterance], words: list[Word]) -> None:
    """Where each clip may begin and end: up to EDGE_REACH outside its first and last word and EDGE_SLACK inside
    (Whisper's word edges are good to about 0.1 s), never past the middle of the word before or after it (of any
    speaker); and where it begins and ends when the audio there has no clear silence: the middle between the
    words by Whisper's times, or EDGE_SLACK outside its word where it has no neighbour."""
    middle = [(word.start + word.end) / 2 for word in words]
    position = {id(word): i for i, word in enumerate(words)}
    for utterance in utterances:
        first, last = position[id(utterance.words[0])], position[id(utterance.words[-1])]
        low = max(0.0, words[first].start - EDGE_REACH, middle[first - 1] if first else 0.0)
        start_high = min(words[first].start + EDGE_SLACK, middle[first])
        end_low = max(words[last].end - EDGE_SLACK, middle[last])
        high = min(words[last].end + EDGE_REACH, middle[last + 1] if last + 1 < len(words) else float("inf"))
        utterance.start_region = (min(low, start_high), start_high)
        utterance.end_region = (end_low, max(high, end_low))
        start = (words[first - 1].end + words[first].start) / 2 if first else words[first].start - EDGE_SLACK
        end = ((words[last].end + words[last + 1].start) / 2 if last + 1 < len(words)
               else words[last].end + EDGE_SLACK)
        utterance.start = min(max(start, utterance.start_region[0]), start_high)
        utterance.end = max(min(end, utterance.end_region[1]), end_low)


def edge(audio16k: np.ndarray, begin: float, region: tuple[float, float], otherwise: float, end: bool) -> float:
    """Where a clip ends (end=True) or begins in `region` (seconds on the file's timeline; audio16k starts at
    `begin`): PAUSE_KEPT into the widest silence there, or `otherwise` when there is no clear silence (a
    junction of two words, or noise)."""
    runs = silent_runs(audio16k, region[0] - begin, region[1] - begin, shortest=SHORTEST_PAUSE)
    if not runs:
        return otherwise
    start, stop = max(runs, key=lambda run: run[1] - run[0])
    kept = min(PAUSE_KEPT, (stop - start) / 2)
    return begin + (start + kept if end else stop - kept)


def _to_16k(mono: np.ndarray, rate: int) -> np.ndarray:
    import torch

    return resample(torch.from_numpy(np.ascontiguousarray(mono)), rate, MODEL_SAMPLE_RATE).numpy()
