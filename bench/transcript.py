"""Transcript and utterances: word and speaker errors, utterance purity and speed of transcribe and utterances.

    .venv/bin/python bench/transcript.py [--jobs 1] [--only sample conv3] [--work /tmp/transcript-bench]

Recordings (real speech, references in /work/shared/data): the pyannote sample (30 s, 2 speakers, STM), conv3 and
conv3_pink5dB (63 s, 3 espeak voices, transcript.tsv) and a texted conversation (bench/conversations.py
texted_conversation, seed 1, 3 min: the librivox reader, JFK and the sample's two speakers, with an STM). Each is
run through the command line with --diarization_model offline --language en --workers 1, runs one after another:
  word       --steps split vad diar transcribe utterances, --chunk_duration longer than the file (unsplit),
             --speaker_turns word, --asr_batch_size 8 (the defaults)
  sentence   the word run's results copied, rerun with --speaker_turns sentence (only the finishes run again)
  batch 1    the word run's results copied, rerun with --asr_batch_size 1 (transcribe runs again, alone)
  split      --steps split vad transcribe --chunk_duration 20 (60 for the conversation); its words are scored
             against the word run's (the unsplit transcript as reference)
and one generated file for VAD gating: jfk + conv3 + sample with 30 s of digital silence between them, run with
--steps split vad diar transcribe and with --steps split diar transcribe.
WER: the words of <stem>.json in time order against the reference text in time order (lower case, punctuation
but apostrophes dropped). cpWER: each hypothesis speaker's words against each reference speaker's, speakers paired
one to one for the fewest errors (scipy linear_sum_assignment); an unpaired speaker's words are all errors.
Purity: per utterance (offset, duration), the time covered by exactly one reference speaker (RTTM), per speaker;
the majority speaker's share of that time over all utterances. Stage seconds are report.json's; DNSMOS is timed
again in this process (model load + scoring every clip of the word run, on as many threads as the tool's worker).
With --jobs 2 two recordings run at once: the seconds are then not comparable with one-at-a-time runs.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_parser, measured_run, tool_command  # noqa: E402
from conversations import RATE, _mono_16k, texted_conversation  # noqa: E402
from sample_data import companion, resolve as data  # noqa: E402

SILENCE = 30.0  # seconds of digital silence between the recordings of the VAD gating file
FRAME = 0.01  # seconds: the grid of the purity computation


@dataclass(frozen=True)
class Line:
    start: float
    end: float
    speaker: str
    text: str


@dataclass(frozen=True)
class Recording:
    name: str
    audio: Path
    rttm: Path
    lines: tuple[Line, ...]  # the reference transcript, in time order
    chunk: float  # part length of the split run

    @property
    def duration(self) -> float:
        return sf.info(self.audio).duration


def stm_lines(path: Path) -> tuple[Line, ...]:
    found = []
    for line in path.read_text().splitlines():
        if line.strip():
            _, _, speaker, start, end, text = line.split(maxsplit=5)
            found.append(Line(float(start), float(end), speaker, text))
    return tuple(sorted(found, key=lambda line: line.start))


def tsv_lines(path: Path) -> tuple[Line, ...]:
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    return tuple(sorted((Line(float(s), float(e), speaker, text) for s, e, speaker, text in rows),
                        key=lambda line: line.start))


def recordings(work: Path) -> list[Recording]:
    sample, conv3, pink = (data("pyannote_sample/sample.flac"), data("conv3/conv3.flac"),
                           data("conv3/conv3_pink5dB.flac"))
    conv3_text = tsv_lines(data("conv3/conv3.transcript.tsv"))
    texted = texted_conversation(work / "texted", 3.0, 1)
    return [Recording("pyannote sample", sample, companion(sample, ".rttm"), stm_lines(companion(sample, ".stm")), 20),
            Recording("conv3", conv3, companion(conv3, ".rttm"), conv3_text, 20),
            Recording("conv3_pink5dB", pink, companion(pink, ".rttm"), conv3_text, 20),
            Recording("texted conversation", texted.audio, texted.rttm, stm_lines(texted.audio.with_suffix(".stm")),
                      60)]


def vad_gating_file(folder: Path) -> tuple[Path, str]:
    """jfk + conv3 + the pyannote sample with SILENCE seconds of zeros between, and its reference text."""
    sample, conv3, jfk = data("pyannote_sample/sample.flac"), data("conv3/conv3.flac"), data("jfk/jfk.flac")
    gap = np.zeros(int(SILENCE * RATE), dtype=np.float32)
    audio = np.concatenate([_mono_16k(jfk), gap, _mono_16k(conv3), gap, _mono_16k(sample)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "joined_silences.wav"
    sf.write(path, audio, RATE, subtype="PCM_16")
    text = " ".join([jfk.with_name("jfk.txt").read_text(),  # jfk.txt is not in the registry: read beside jfk.flac
                     *(line.text for line in tsv_lines(data("conv3/conv3.transcript.tsv"))),
                     *(line.text for line in stm_lines(companion(sample, ".stm")))])
    return path, text


# ---- scores ----

def normalise(text: str) -> str:
    """Lower case, punctuation but apostrophes replaced by spaces, spaces collapsed."""
    text = re.sub(r"[^\w\s']|_", " ", text.lower().replace("\u2019", "'"))
    return " ".join(text.split())


@dataclass
class Errors:
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def total(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        return 100.0 * self.total / max(1, self.reference_words)

    def __str__(self) -> str:
        return f"{self.rate:.1f}"


def errors(reference: str, hypothesis: str) -> Errors:
    import jiwer

    reference, hypothesis = normalise(reference), normalise(hypothesis)
    words = len(reference.split())
    if not reference or not hypothesis:  # jiwer refuses an empty reference
        return Errors(0, words, len(hypothesis.split()), words)
    found = jiwer.process_words(reference, hypothesis)
    return Errors(found.substitutions, found.deletions, found.insertions, words)


def cp_wer(reference: dict[str, str], hypothesis: dict[str, str]) -> float:
    """Concatenated minimum-permutation WER (%): speakers paired one to one (an unpaired one against nothing)."""
    from scipy.optimize import linear_sum_assignment

    size = max(len(reference), len(hypothesis))
    references = list(reference.values()) + [""] * (size - len(reference))
    hypotheses = list(hypothesis.values()) + [""] * (size - len(hypothesis))
    cost = np.array([[errors(r, h).total for h in hypotheses] for r in references])
    rows, columns = linear_sum_assignment(cost)
    return 100.0 * cost[rows, columns].sum() / max(1, sum(len(normalise(r).split()) for r in references))


def transcript_words(results: Path, audio: Path) -> list[dict]:
    """<stem>.json's words (each with its segment's speaker), in time order."""
    transcript = json.loads((results / audio.stem / f"{audio.stem}.json").read_text())
    words = [{**word, "speaker": segment["speaker"]} for segment in transcript["segments"] for word in segment["words"]]
    return sorted(words, key=lambda word: (word["start"], word["end"]))


def text_of(words: list[dict]) -> str:
    return " ".join(word["word"].strip() for word in words)


def by_speaker(items, speaker, text) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    for item in items:
        found.setdefault(str(speaker(item)), []).append(text(item))
    return {name: " ".join(texts) for name, texts in found.items()}


def purity(utterances: list[dict], rttm: Path) -> tuple[float, float]:
    """(% of the utterances' single-speaker time that is their majority speaker's, % of utterances >= 95% pure)."""
    turns = [line.split() for line in rttm.read_text().splitlines() if line.strip()]
    speakers = sorted({turn[7] for turn in turns})
    end = max([float(t[3]) + float(t[4]) for t in turns] + [u["offset"] + u["duration"] for u in utterances])
    active = np.zeros((len(speakers), int(np.ceil(end / FRAME)) + 1), dtype=bool)
    for turn in turns:
        start = float(turn[3])
        active[speakers.index(turn[7]), round(start / FRAME): round((start + float(turn[4])) / FRAME)] = True
    alone = active & (active.sum(axis=0) == 1)
    majority = single = pure = 0
    for utterance in utterances:
        start, end = utterance["offset"], utterance["offset"] + utterance["duration"]
        span = alone[:, round(start / FRAME): round(end / FRAME)]
        per_speaker = span.sum(axis=1)
        majority, single = majority + per_speaker.max(), single + per_speaker.sum()
        pure += bool(per_speaker.sum()) and per_speaker.max() >= 0.95 * per_speaker.sum()
    return 100.0 * majority / max(1, single), 100.0 * pure / max(1, len(utterances))


def dnsmos_seconds(results: Path, models_dir: Path) -> tuple[float, float, int]:
    """(seconds to load DNSMOS, seconds to score every clip of the run, clips): what the utterances stage spends on
    it, measured again here on the worker's thread count."""
    from gpu_memory import GPUMemoryManager, usable_cores
    from model_manager import ModelManager

    models = ModelManager(GPUMemoryManager(use_gpu=False), models_dir=models_dir, cpu_threads=usable_cores())
    begun = time.perf_counter()
    scorer = models.get_dnsmos()
    loaded = time.perf_counter() - begun
    clips = [results / json.loads(line)["audio_filepath"]
             for line in (results / "utterances.jsonl").read_text().splitlines() if line.strip()]
    audio = []
    for clip in clips:
        samples, rate = sf.read(clip, dtype="float32")
        assert rate == RATE and samples.ndim == 1, clip
        audio.append(samples)
    begun = time.perf_counter()
    for samples in audio:
        scorer.score(samples)
    return loaded, time.perf_counter() - begun, len(clips)


# ---- runs ----

def run_tool(audio: Path, output: Path, models_dir: Path, *args: str, fresh: bool = True) -> dict:
    """One run of the command line; its report.json for the file."""
    if fresh:
        shutil.rmtree(output, ignore_errors=True)
    print(f"  {time.strftime('%H:%M:%S')} {audio.name} -> {output.name}: {' '.join(args)}", file=sys.stderr,
          flush=True)
    measured_run(tool_command(audio, output, "--diarization_model", "offline", "--language", "en", "--workers", "1",
                              "--models_dir", str(models_dir), *args))
    report = json.loads((output / audio.stem / "report.json").read_text())
    assert report["status"] == "done", report
    return report


def rerun_copy(audio: Path, results: Path, output: Path, models_dir: Path, *args: str) -> dict:
    """The finished run `results` copied to `output`, rerun there with other options (what they change is redone)."""
    shutil.rmtree(output, ignore_errors=True)
    shutil.copytree(results, output)
    return run_tool(audio, output, models_dir, *args, fresh=False)


def measure(recording: Recording, work: Path, models_dir: Path) -> dict:
    audio, folder, duration = recording.audio, work / recording.audio.stem, recording.duration
    steps = ("--steps", "split", "vad", "diar", "transcribe", "utterances")
    word = run_tool(audio, folder / "word", models_dir, *steps, "--chunk_duration", str(int(duration) + 60))
    dnsmos = dnsmos_seconds(folder / "word", models_dir)
    sentence = rerun_copy(audio, folder / "word", folder / "sentence", models_dir, *steps, "--chunk_duration",
                          str(int(duration) + 60), "--speaker_turns", "sentence")
    batch1 = rerun_copy(audio, folder / "word", folder / "batch1", models_dir, *steps, "--chunk_duration",
                        str(int(duration) + 60), "--asr_batch_size", "1")
    split = run_tool(audio, folder / "split", models_dir, "--steps", "split", "vad", "transcribe",
                     "--chunk_duration", f"{recording.chunk:g}")

    reference = " ".join(line.text for line in recording.lines)
    reference_speakers = by_speaker(recording.lines, lambda line: line.speaker, lambda line: line.text)
    found = {}
    for name in ("word", "sentence", "batch1", "split"):
        words = transcript_words(folder / name, audio)
        utterances = [json.loads(line) for line in (folder / name / "utterances.jsonl").read_text().splitlines()
                      if line.strip()] if name in ("word", "sentence") else []
        found[name] = dict(words=words, text=text_of(words), utterances=utterances,
                           speakers=by_speaker(words, lambda w: w["speaker"], lambda w: w["word"].strip()))
    stage = {name: report["stages"] for name, report in
             (("word", word), ("sentence", sentence), ("batch1", batch1), ("split", split))}
    return dict(
        recording=recording, duration=duration, dnsmos=dnsmos, stage=stage, parts=split["parts"],
        reference_words=len(normalise(reference).split()),
        reference_speakers=len(reference_speakers),
        wer={name: errors(reference, found[name]["text"]) for name in found},
        cpwer={name: cp_wer(reference_speakers, found[name]["speakers"]) for name in ("word", "sentence")},
        speakers=len(found["word"]["speakers"]),
        hypothesis_words={name: len(normalise(found[name]["text"]).split()) for name in found},
        purity={name: purity(found[name]["utterances"], recording.rttm) for name in ("word", "sentence")},
        utterances={name: len(found[name]["utterances"]) for name in ("word", "sentence")},
        utterance_seconds=sum(u["duration"] for u in found["word"]["utterances"]),
        batch1_vs_8=errors(found["word"]["text"], found["batch1"]["text"]),
        split_vs_unsplit=errors(found["word"]["text"], found["split"]["text"]),
    )


def vad_gating(work: Path, models_dir: Path) -> list[str]:
    audio, reference = vad_gating_file(work / "vad_gating")
    duration = sf.info(audio).duration
    rows = []
    for name, steps in (("split vad diar transcribe", ("split", "vad", "diar", "transcribe")),
                        ("split diar transcribe", ("split", "diar", "transcribe"))):
        report = run_tool(audio, work / "vad_gating" / name.replace(" ", "_"), models_dir, "--steps", *steps)
        words = transcript_words(work / "vad_gating" / name.replace(" ", "_"), audio)
        found = errors(reference, text_of(words))
        seconds = report["stages"]["transcribe"]["seconds"]
        rows.append(f"| {name} | {seconds:.1f} | {seconds / duration:.3f} | {len(normalise(text_of(words)).split())}/"
                    f"{found.reference_words} | {found} | {found.substitutions}/{found.deletions}/{found.insertions} |")
    return [f"VAD gating file: jfk + conv3 + pyannote sample, {SILENCE:g} s of digital silence between them, "
            f"{duration:.1f} s", "",
            "| steps | transcribe s | transcribe RTF | words found/reference | WER % | S/D/I |",
            "|---|---|---|---|---|---|", *rows]


def tables(results: list[dict]) -> list[str]:
    def name(result: dict) -> str:
        return f"{result['recording'].name} ({result['duration']:.0f} s)"

    out = ["| recording | reference words | words found | WER % | cpWER % word turns | cpWER % sentence turns | "
           "speakers found/reference | utterances | purity % word / sentence | utterances >= 95% pure, % word / "
           "sentence |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        (pure_w, share_w), (pure_s, share_s) = r["purity"]["word"], r["purity"]["sentence"]
        out.append(f"| {name(r)} | {r['reference_words']} | {r['hypothesis_words']['word']} | {r['wer']['word']} | "
                   f"{r['cpwer']['word']:.1f} | {r['cpwer']['sentence']:.1f} | "
                   f"{r['speakers']}/{r['reference_speakers']}"
                   f" | {r['utterances']['word']} ({r['utterance_seconds']:.0f} s) | {pure_w:.1f} / {pure_s:.1f} | "
                   f"{share_w:.0f} / {share_s:.0f} |")
    out += ["", "| recording | diar RTF | transcribe RTF | utterances RTF | utterances s | DNSMOS s: load + scoring "
                "(clips) | DNSMOS share of utterances |", "|---|---|---|---|---|---|---|"]
    for r in results:
        stages, (load, score, clips) = r["stage"]["word"], r["dnsmos"]
        utterances = stages["utterances"]["seconds"]
        out.append(f"| {name(r)} | {stages['diar']['seconds'] / r['duration']:.3f} | "
                   f"{stages['transcribe']['seconds'] / r['duration']:.3f} | {utterances / r['duration']:.3f} | "
                   f"{utterances:.1f} | {load:.2f} + {score:.2f} ({clips}) | "
                   f"{100 * (load + score) / max(utterances, 1e-9):.0f}% |")
    out += ["", "| recording | transcribe s, batch 8 / 1 | batch 8 speed-up | WER %, batch 8 / 1 | words, batch 8 / 1 "
                "| WER % of batch 1 against batch 8 |", "|---|---|---|---|---|---|"]
    for r in results:
        eight, one = r["stage"]["word"]["transcribe"]["seconds"], r["stage"]["batch1"]["transcribe"]["seconds"]
        out.append(f"| {name(r)} | {eight:.1f} / {one:.1f} | {one / eight:.2f}x | {r['wer']['word']} / "
                   f"{r['wer']['batch1']} | {r['hypothesis_words']['word']} / {r['hypothesis_words']['batch1']} | "
                   f"{r['batch1_vs_8']} |")
    out += ["", "| recording | part length | parts | WER % split against unsplit (S/D/I) | words unsplit / split | "
                "WER % against the reference, unsplit / split |", "|---|---|---|---|---|---|"]
    for r in results:
        seam = r["split_vs_unsplit"]
        out.append(f"| {name(r)} | {r['recording'].chunk:g} s | {r['parts']} | {seam} ({seam.substitutions}/"
                   f"{seam.deletions}/{seam.insertions}) | {r['hypothesis_words']['word']} / "
                   f"{r['hypothesis_words']['split']} | {r['wer']['word']} / {r['wer']['split']} |")
    return out


def main() -> None:
    parser = bench_parser(__doc__, Path(tempfile.gettempdir()) / "transcript-bench")
    parser.add_argument("--jobs", type=int, default=1, help="recordings run at once (each run is one worker)")
    parser.add_argument("--only", nargs="+", default=[""],
                        help="only recordings whose name contains one of these ('vad' for the VAD gating file)")
    args = parser.parse_args()
    begun = time.monotonic()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    chosen = [r for r in recordings(args.work) if any(part in r.name for part in args.only)]
    with ThreadPoolExecutor(args.jobs) as pool:
        measured = [pool.submit(measure, r, args.work, args.models_dir) for r in chosen]
        gating = pool.submit(vad_gating, args.work, args.models_dir) \
            if any(part in "vad gating" for part in args.only) else None
        lines = tables([job.result() for job in measured]) if measured else []
        if gating is not None:
            lines += ["", *gating.result()]
    print("\n".join(lines))
    print(f"\n(bench time {(time.monotonic() - begun) / 60:.1f} min, work folder {args.work})")


if __name__ == "__main__":
    main()
