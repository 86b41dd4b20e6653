"""utterances: clean single-speaker clips with their text and a quality score, in the manifests trainers read.

From the file's speaker-attributed words (transcribe's segments): consecutive words of one speaker are joined
while the pause between them is under --max_pause; an utterance longer than --max_utterance is cut at its widest
pause (again, until every piece fits); shorter than --min_utterance it is dropped. Cuts fall only between words:
each clip reaches up to UTTERANCE_PAD beyond its first and last word (Whisper's word edges are good to about
0.1 s), never past the middle of the pause to the next word. Words in overlapped speech (two diarized speakers
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
from typing import Iterator

import numpy as np

from audio_io import AudioWriter, as_float, read_frames, read_jsonl, write_jsonl
from layout import AUDIOFOLDER_METADATA, UTTERANCE_MANIFEST, UTTERANCES, fitting_name, remove
from loaders.asr import Word, words_text
from model_manager import ModelUnavailable
from options import Option, non_negative, positive
from stages.base import MODEL_SAMPLE_RATE, FileContext, Part, Stage, resample
from stages.diarize import Turn, read_rttm
from stages.transcribe import UNKNOWN, transcript_segments

UTTERANCE_PAD = 0.15  # seconds of audio kept beyond the first and last word
MANIFEST_FIELDS = ("audio_filepath", "duration", "text", "speaker", "source", "offset", "dnsmos_sig", "dnsmos_bak",
                   "dnsmos_ovrl")


@dataclass
class Utterance:
    speaker: str
    words: list[Word]
    start: float = 0.0  # the clip's span, seconds on the file's timeline (words plus padding)
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
        return 0.03  # cutting and DNSMOS, measured (bench/transcript.py)

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
        found, left_out, short = self.cut(spoken, overlaps)
        pad(found, [word for word, _ in spoken])
        rate = self.config.utterance_sample_rate or ctx.source_info.sample_rate
        records, low_quality = [], 0
        for utterance in found:
            audio, native = self._audio(ctx, utterance, rate)
            sig, bak, ovrl = scorer.score(_to_16k(audio, rate))
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
            "seconds": round(sum(record["duration"] for record in records), 3),
            "dropped_short": short, "dropped_low_quality": low_quality, "words_left_out": left_out,
            "mean_dnsmos_ovrl": round(float(np.mean([r["dnsmos_ovrl"] for r in records])), 3) if records else None}

    def cut(self, words: list[tuple[Word, str]],
            overlaps: list[tuple[float, float]]) -> tuple[list[Utterance], int, int]:
        """Runs of one speaker's words with pauses under --max_pause, cut to --max_utterance, at least
        --min_utterance long; words without a speaker or in overlapped speech end a run and are left out.
        Returns (utterances, words left out, utterances dropped as too short)."""
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
        pieces = [piece for run in runs for piece in self._fit(run)]
        kept = [piece for piece in pieces if piece.spoken >= self.config.min_utterance]
        return kept, left_out, len(pieces) - len(kept)

    def _fit(self, run: Utterance) -> list[Utterance]:
        """The run cut at its widest pause until every piece is at most --max_utterance long."""
        if run.spoken <= self.config.max_utterance or len(run.words) < 2:
            return [run]
        gaps = [run.words[i].start - run.words[i - 1].end for i in range(1, len(run.words))]
        cut = 1 + int(np.argmax(gaps))
        return (self._fit(Utterance(run.speaker, run.words[:cut]))
                + self._fit(Utterance(run.speaker, run.words[cut:])))

    def _audio(self, ctx: FileContext, utterance: Utterance, rate: int) -> tuple[np.ndarray, str]:
        """The clip's samples, mono at `rate`, from the parts' current audio, and the subtype to write them in.
        A mono input at its own rate is copied sample for sample."""
        source_rate = ctx.source_info.sample_rate
        first, end = round(utterance.start * source_rate), round(utterance.end * source_rate)
        pieces = []
        for part in sorted(ctx.parts, key=lambda part: part.start_frame):
            low, high = max(first, part.start_frame), min(end, part.start_frame + part.frames)
            if high > low:
                pieces.append(read_frames(part.audio, part.audio_start + low - part.start_frame, high - low))
        subtype = ctx.parts[0].audio.write_subtype
        audio = np.concatenate(pieces)
        if audio.shape[1] == 1 and rate == source_rate:
            return audio[:, 0], subtype
        mono = as_float(audio).mean(axis=1)
        if rate != source_rate:
            import torch

            mono = resample(torch.from_numpy(np.ascontiguousarray(mono)), source_rate, rate).numpy()
        return mono, subtype

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


def pad(utterances: list[Utterance], words: list[Word]) -> None:
    """Each clip's span: its words plus up to UTTERANCE_PAD, never past the middle of the pause to the word
    before or after it (of any speaker), so that no clip begins or ends inside someone's word."""
    position = {id(word): i for i, word in enumerate(words)}
    for utterance in utterances:
        first, last = position[id(utterance.words[0])], position[id(utterance.words[-1])]
        start, end = words[first].start - UTTERANCE_PAD, words[last].end + UTTERANCE_PAD
        if first > 0:
            start = max(start, (words[first - 1].end + words[first].start) / 2)
        if last + 1 < len(words):
            end = min(end, (words[last].end + words[last + 1].start) / 2)
        # (overlapping words of two speakers put that middle inside the word: the word's own edge wins then)
        utterance.start, utterance.end = max(0.0, min(start, words[first].start)), max(end, words[last].end)


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    import torch

    mono = torch.from_numpy(np.ascontiguousarray(as_float(audio[:, None])[:, 0]))
    return resample(mono, rate, MODEL_SAMPLE_RATE).numpy()
