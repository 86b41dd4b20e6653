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


def make_conversation(folder: Path, speakers: int, minutes: float, seed: int,
                      pool: dict[str, list[np.ndarray]] | None = None) -> Conversation:
    """A conversation of `speakers` real voices for about `minutes`, as 16 kHz WAV with its RTTM."""
    pool = pool or voices()
    rng = np.random.default_rng(seed)
    # the voices with the most speech first, so that every chosen speaker can talk often
    ranked = sorted(pool, key=lambda name: -sum(len(u) for u in pool[name]))
    chosen = list(rng.choice(ranked[: max(speakers, 12)], size=speakers, replace=False))
    queues = {name: list(rng.permutation(len(pool[name]))) for name in chosen}
    length = int(minutes * 60 * RATE)
    mix = np.zeros(length + 30 * RATE, dtype=np.float32)
    turns, cursor, previous = [], int(0.5 * RATE), None
    while cursor < length:
        speaker = rng.choice([name for name in chosen if name != previous] or chosen)
        if not queues[speaker]:
            queues[speaker] = list(rng.permutation(len(pool[speaker])))
        utterance = pool[speaker][queues[speaker].pop()]
        start = cursor
        if previous is not None and rng.random() < 0.1:  # overlapped speech
            start = max(turns[-1][0], cursor - int(rng.uniform(0.3, 1.0) * RATE))
        gain = 0.1 / max(1e-4, float(np.sqrt((utterance ** 2).mean())))  # speakers at one level
        mix[start: start + len(utterance)] += utterance * gain
        turns.append((start, start + len(utterance), speaker))
        cursor = start + len(utterance) + int(rng.uniform(0.2, 1.2) * RATE)
        previous = speaker
    mix = mix[: cursor]
    mix *= 0.9 / max(1e-6, float(np.abs(mix).max()))
    stem = f"conv_{speakers}spk_{minutes:g}min_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    audio, rttm = folder / f"{stem}.wav", folder / f"{stem}.rttm"
    sf.write(audio, mix, RATE, subtype="PCM_16")
    rttm.write_text("".join(f"SPEAKER {stem} 1 {s / RATE:.3f} {(e - s) / RATE:.3f} <NA> <NA> {name} <NA> <NA>\n"
                            for s, e, name in turns))
    return Conversation(audio, rttm, speakers, len(mix) / RATE)


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
