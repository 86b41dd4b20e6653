"""Longer conversations of real voices, with exact RTTM references, to measure diarization on.

    .venv/bin/python bench/conversations.py --out /tmp/conversations   # writes the default set

Voices: the ten LibriSpeech readers of `librispeech_speakers/` (ten utterances each), the librivox reader, JFK,
and the speakers of the pyannote sample and of falcon cut at their reference turns (only turns of one speaker
alone, at least 1 s). Each utterance is one turn, its leading and trailing silence trimmed, its pauses kept.
Turns follow each other with a pause of 0.2-1.2 s; one in ten starts 0.3-1.0 s before the previous one ends
(overlapped speech). Nothing is synthetic: the espeak voices of conv3 are not speakers to a speaker embedding.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sample_data import companion, glob as data_glob, resolve as data  # noqa: E402

RATE = 16000
# (speakers, minutes, seed): 5-15 minute conversations of 3-8 speakers
DEFAULT_SET = ((3, 5.0, 1), (4, 8.0, 2), (6, 10.0, 3), (8, 14.0, 4))


@dataclass(frozen=True)
class Conversation:
    audio: Path
    rttm: Path
    speakers: int
    duration: float


def _mono_16k(path: Path, start: float = 0.0, end: float | None = None) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio[int(start * rate): None if end is None else int(end * rate)].mean(axis=1)
    if rate != RATE:
        import torch
        import torchaudio.functional

        audio = torchaudio.functional.resample(torch.from_numpy(audio), rate, RATE).numpy()
    return audio


def _trimmed(audio: np.ndarray) -> np.ndarray:
    """Without leading and trailing silence: 10 ms frames quieter than 26 dB under the loudest."""
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt((frames ** 2).mean(axis=1)) > 0.05 * np.sqrt((frames ** 2).mean(axis=1)).max())
    return audio[loud[0] * 160: (loud[-1] + 1) * 160] if len(loud) else audio[:0]


def voices() -> dict[str, list[np.ndarray]]:
    """speaker -> utterances (16 kHz mono float32, trimmed)."""
    pool: dict[str, list[np.ndarray]] = {}
    for path in data_glob("librispeech_speakers/*/*.flac"):
        pool.setdefault(f"ls{path.parent.name}", []).append(_trimmed(_mono_16k(path)))
    pool["austen"] = [_trimmed(_mono_16k(path)) for path in data_glob("librivox/*.flac")]
    pool["jfk"] = [_trimmed(_mono_16k(data("jfk/jfk.flac")))]
    for name in ("pyannote_sample/sample.flac", "falcon/test.flac"):
        source = data(name)
        turns = [line.split() for line in companion(source, ".rttm").read_text().splitlines() if line.strip()]
        spans = [(float(t[3]), float(t[3]) + float(t[4]), t[7]) for t in turns]
        for start, end, speaker in spans:
            alone = not any(s < end and start < e for s, e, other in spans if (s, e, other) != (start, end, speaker))
            if alone and end - start >= 1.0:
                pool.setdefault(f"{source.parent.name}-{speaker}", []).append(_mono_16k(source, start, end))
    return pool


def _mix(pool: dict[str, list[np.ndarray]], chosen: list[str], minutes: float, rng: np.random.Generator,
         queues: dict[str, list[int]]) -> tuple[np.ndarray, list[tuple[int, int, str, int]]]:
    """The chosen voices taking turns for about `minutes`: (16 kHz mix, turns (start, end, speaker, utterance
    index) in samples). Turns follow each other after a pause of 0.2-1.2 s; one in ten overlaps the one before."""
    length = int(minutes * 60 * RATE)
    mix = np.zeros(length + 30 * RATE, dtype=np.float32)
    turns, cursor, previous = [], int(0.5 * RATE), None
    while cursor < length:
        speaker = str(rng.choice([name for name in chosen if name != previous] or chosen))
        if not queues[speaker]:
            queues[speaker] = list(rng.permutation(len(pool[speaker])))
        index = int(queues[speaker].pop())
        utterance = pool[speaker][index]
        start = cursor
        if previous is not None and rng.random() < 0.1:  # overlapped speech
            start = max(turns[-1][0], cursor - int(rng.uniform(0.3, 1.0) * RATE))
        gain = 0.1 / max(1e-4, float(np.sqrt((utterance ** 2).mean())))  # speakers at one level
        mix[start: start + len(utterance)] += utterance * gain
        turns.append((start, start + len(utterance), speaker, index))
        cursor = start + len(utterance) + int(rng.uniform(0.2, 1.2) * RATE)
        previous = speaker
    mix = mix[: cursor]
    mix *= 0.9 / max(1e-6, float(np.abs(mix).max()))
    return mix, turns


def _write_rttm(path: Path, stem: str, turns: list[tuple[int, int, str, int]]) -> None:
    path.write_text("".join(f"SPEAKER {stem} 1 {s / RATE:.3f} {(e - s) / RATE:.3f} <NA> <NA> {name} <NA> <NA>\n"
                            for s, e, name, _ in turns))


def make_conversation(folder: Path, speakers: int, minutes: float, seed: int,
                      pool: dict[str, list[np.ndarray]] | None = None) -> Conversation:
    """A conversation of `speakers` real voices for about `minutes`, as 16 kHz WAV with its RTTM."""
    pool = pool or voices()
    rng = np.random.default_rng(seed)
    # the voices with the most speech first, so that every chosen speaker can talk often
    ranked = sorted(pool, key=lambda name: -sum(len(u) for u in pool[name]))
    chosen = list(rng.choice(ranked[: max(speakers, 12)], size=speakers, replace=False))
    queues = {name: list(rng.permutation(len(pool[name]))) for name in chosen}
    mix, turns = _mix(pool, chosen, minutes, rng, queues)
    stem = f"conv_{speakers}spk_{minutes:g}min_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    audio, rttm = folder / f"{stem}.wav", folder / f"{stem}.rttm"
    sf.write(audio, mix, RATE, subtype="PCM_16")
    _write_rttm(rttm, stem, turns)
    return Conversation(audio, rttm, speakers, len(mix) / RATE)


def texted_voices() -> dict[str, list[tuple[np.ndarray, str]]]:
    """speaker -> [(utterance, its text)]: the voices whose words are known. The librivox reader's clips with their
    .txt and JFK with jfk.txt (not in the registry: read beside jfk.flac), trimmed as in voices(); the pyannote
    sample's Diane and Sheila at their STM lines (consecutive lines of one speaker joined, at least 1 s). Not at
    their RTTM turns: every turn of sample.rttm overlaps another, and its parts without overlap cut off words that
    the STM lines hold; the STM lines never overlap."""
    pool = {"austen": [(_trimmed(_mono_16k(path)), companion(path, ".txt").read_text().strip())
                       for path in data_glob("librivox/*.flac")]}
    jfk = data("jfk/jfk.flac")
    pool["jfk"] = [(_trimmed(_mono_16k(jfk)), jfk.with_name("jfk.txt").read_text().strip())]
    source = data("pyannote_sample/sample.flac")
    lines: list[list] = []
    for line in companion(source, ".stm").read_text().splitlines():
        _, _, speaker, start, end, text = line.split(maxsplit=5)
        if lines and lines[-1][2] == speaker:
            lines[-1][1], lines[-1][3] = float(end), f"{lines[-1][3]} {text}"
        else:
            lines.append([float(start), float(end), speaker, text])
    for start, end, speaker, text in lines:
        if end - start >= 1.0:
            pool.setdefault(f"sample-{speaker}", []).append((_mono_16k(source, start, end), text))
    return pool


def texted_conversation(folder: Path, minutes: float, seed: int) -> Conversation:
    """A conversation of every voice of texted_voices() for about `minutes`, mixed as make_conversation mixes:
    16 kHz WAV with its RTTM and STM (`<file-id> 1 <speaker> <start> <end> <text>`, one line per turn)."""
    voiced = texted_voices()
    pool = {name: [audio for audio, _ in utterances] for name, utterances in voiced.items()}
    mix, turns = _mix(pool, list(pool), minutes, np.random.default_rng(seed), {name: [] for name in pool})
    stem = f"texted_{minutes:g}min_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    audio = folder / f"{stem}.wav"
    sf.write(audio, mix, RATE, subtype="PCM_16")
    _write_rttm(audio.with_suffix(".rttm"), stem, turns)
    audio.with_suffix(".stm").write_text("".join(
        f"{stem} 1 {name} {s / RATE:.3f} {e / RATE:.3f} {voiced[name][index][1]}\n" for s, e, name, index in turns))
    return Conversation(audio, audio.with_suffix(".rttm"), len(pool), len(mix) / RATE)


def default_conversations(folder: Path) -> list[Conversation]:
    pool = voices()
    return [make_conversation(folder, speakers, minutes, seed, pool) for speakers, minutes, seed in DEFAULT_SET]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    for conversation in default_conversations(parser.parse_args().out):
        print(f"{conversation.audio}  {conversation.duration / 60:.1f} min, {conversation.speakers} speakers")


if __name__ == "__main__":
    main()
