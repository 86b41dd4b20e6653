"""CTranslate2 -> openai-whisper conversion: the same model, word timestamps included."""

from __future__ import annotations

import re

import numpy as np
import torch

from conftest import data

# What the recording says (J. F. Kennedy's inaugural address, 1961, public domain).
JFK_WORDS = ("And so my fellow Americans, ask not what your country can do for you, "
             "ask what you can do for your country.")


def test_converted_model_transcribes_like_faster_whisper(whisper_models, tmp_path):
    import whisper
    from faster_whisper import WhisperModel

    from loaders.whisper_convert import convert_ct2_to_openai, load_openai_whisper

    checkpoint = convert_ct2_to_openai(whisper_models["tiny.en-ct2"], tmp_path / "tiny.en.pt", "tiny.en")
    model = load_openai_whisper(checkpoint)
    assert model.dims.n_text_layer == 4 and model.dims.n_vocab == 51864
    assert model.alignment_heads.to_dense().sum() > 0  # restored from the CT2 config, not the default heads
    audio = whisper.load_audio(str(data("jfk/jfk.flac")))
    result = model.transcribe(audio, word_timestamps=True, fp16=False, language="en")
    words = [w for segment in result["segments"] for w in segment["words"]]
    reference = JFK_WORDS
    normalize = lambda text: re.sub(r"[^a-z ]", "", text.lower()).split()  # noqa: E731
    assert normalize(result["text"]) == normalize(reference)

    segments, _ = WhisperModel(str(whisper_models["tiny.en-ct2"]), compute_type="float32",
                               cpu_threads=torch.get_num_threads()).transcribe(audio, word_timestamps=True,
                                                                               language="en")
    fast = [w for segment in segments for w in segment.words]
    assert len(fast) == len(words)
    differences = [abs(a["start"] - b.start) + abs(a["end"] - b.end) for a, b in zip(words, fast)]
    assert np.mean(differences) / 2 < 0.05  # measured 0.013 s


def test_conversion_is_atomic_and_checks_the_format(tmp_path):
    import pytest

    from loaders.whisper_convert import convert_ct2_to_openai, read_ct2_variables

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.bin").write_bytes(b"\x01\x00\x00\x00")
    with pytest.raises(ValueError, match="too old"):
        read_ct2_variables(tmp_path / "bad" / "model.bin")
    with pytest.raises(ValueError):
        convert_ct2_to_openai(tmp_path / "bad", tmp_path / "out.pt")
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".out.pt*"))
