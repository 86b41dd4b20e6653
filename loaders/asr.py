"""Word-timestamped speech recognition behind one small interface, for the two Whisper back-ends.

openai-whisper runs the reference PyTorch model; faster-whisper runs the same weights through CTranslate2
(int8 on CPU by default), which measured several times faster here (see OPTIMIZATION.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float

    def shifted(self, seconds: float) -> "Word":
        return Word(self.word, round(self.start + seconds, 3), round(self.end + seconds, 3), self.probability)

    def to_dict(self) -> dict:
        return asdict(self)


def words_text(words: list[Word]) -> str:
    return "".join(word.word for word in words).strip()


SAMPLE_RATE = 16000


class Transcriber:
    """transcribe(16 kHz mono float32) -> words with times in seconds from the start of that audio."""

    backend: str

    def __init__(self, model, language: str | None = None):
        self.model = model
        self.language = language

    def transcribe(self, audio: np.ndarray) -> tuple[list[Word], str | None]:
        raise NotImplementedError

    def transcribe_clips(self, audio: np.ndarray, clips: list[tuple[float, float]], batch_size: int) -> list[Word]:
        """Words of the clips (start, end in seconds, each at most 30 s) of `audio`, times from its start: one
        clip after another (a back-end that batches overrides this)."""
        words = []
        for start, end in clips:
            found, _ = self.transcribe(audio[round(start * SAMPLE_RATE): round(end * SAMPLE_RATE)])
            words += [word.shifted(start) for word in found]
        return words


class OpenAIWhisperTranscriber(Transcriber):
    backend = "openai-whisper"

    def transcribe(self, audio: np.ndarray) -> tuple[list[Word], str | None]:
        fp16 = next(self.model.parameters()).is_cuda
        result = self.model.transcribe(audio.astype(np.float32), word_timestamps=True, fp16=fp16,
                                       language=self.language, condition_on_previous_text=False, verbose=None)
        words = [Word(w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
                 for segment in result["segments"] for w in segment.get("words", [])]
        return words, result.get("language")


class FasterWhisperTranscriber(Transcriber):
    backend = "faster-whisper"

    def transcribe(self, audio: np.ndarray) -> tuple[list[Word], str | None]:
        segments, info = self.model.transcribe(audio.astype(np.float32), word_timestamps=True,
                                               language=self.language, condition_on_previous_text=False)
        return _words(segments), info.language

    def transcribe_clips(self, audio: np.ndarray, clips: list[tuple[float, float]], batch_size: int) -> list[Word]:
        """Clips decoded batch_size at a time by faster-whisper's batched pipeline (one clip's decoder steps are
        too small to keep the cores busy); batch_size 1 decodes them one after another."""
        if batch_size <= 1 or not clips:
            return super().transcribe_clips(audio, clips, batch_size)
        from faster_whisper import BatchedInferencePipeline

        segments, _ = BatchedInferencePipeline(self.model).transcribe(
            audio.astype(np.float32), clip_timestamps=[{"start": start, "end": end} for start, end in clips],
            word_timestamps=True, language=self.language, batch_size=batch_size)
        return _words(segments)


def _words(segments) -> list[Word]:
    return [Word(w.word, float(w.start), float(w.end), float(w.probability))
            for segment in segments for w in (segment.words or [])]
