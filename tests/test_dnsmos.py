"""DNSMOS P.835: the same scores as Microsoft's speechmos on real speech, and noise lowers them."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import data, data_glob

from loaders.dnsmos import SAMPLE_RATE, DNSMOS


@pytest.fixture(scope="module")
def dnsmos(models_dir) -> DNSMOS:
    return DNSMOS(str(models_dir / "dnsmos" / "sig_bak_ovr.onnx"))


def jfk16k() -> np.ndarray:
    import torch
    import torchaudio.functional as F

    audio, rate = sf.read(data("jfk/jfk.flac"), dtype="float32")
    return F.resample(torch.from_numpy(audio.mean(axis=1)), rate, SAMPLE_RATE).numpy()


def librivox16k() -> np.ndarray:
    """The five LibriVox readings (16 kHz, 3-7 s each) back to back: 24.7 s, long enough for several windows."""
    return np.concatenate([sf.read(path, dtype="float32")[0] for path in sorted(data_glob("librivox/*.flac"))])


@pytest.mark.parametrize("clip", ["jfk", "jfk_3s", "librivox_25s"])
def test_scores_equal_speechmos(dnsmos, clip):
    from speechmos import dnsmos as reference

    audio = {"jfk": jfk16k, "jfk_3s": lambda: jfk16k()[:3 * SAMPLE_RATE], "librivox_25s": librivox16k}[clip]()
    expected = reference.run(audio, SAMPLE_RATE)
    assert dnsmos.score(audio) == pytest.approx(
        (expected["sig_mos"], expected["bak_mos"], expected["ovrl_mos"]), abs=1e-4)


def test_noise_lowers_background_and_overall(dnsmos):
    speech = jfk16k()
    noise, rate = sf.read(data("noise/vibe_ace_30s.flac"), dtype="float32")
    assert rate == SAMPLE_RATE
    noise = noise[:len(speech)] * np.sqrt(np.mean(speech ** 2) / np.mean(noise[:len(speech)] ** 2))  # 0 dB SNR
    noisy = speech + noise
    noisy /= max(1.0, np.abs(noisy).max())
    _, clean_bak, clean_ovrl = dnsmos.score(speech)
    _, noisy_bak, noisy_ovrl = dnsmos.score(noisy)
    # measured: BAK 3.00 -> 1.12, OVRL 2.71 -> 1.18
    assert noisy_bak <= clean_bak - 0.5
    assert noisy_ovrl <= clean_ovrl - 0.5


def test_empty_clip_is_refused_and_loud_samples_are_clipped(dnsmos):
    with pytest.raises(ValueError):
        dnsmos.score(np.zeros(0, dtype=np.float32))
    speech = jfk16k()[:3 * SAMPLE_RATE]
    assert dnsmos.score(speech * 3) == dnsmos.score(np.clip(speech * 3, -1, 1))


def test_model_manager_loads_dnsmos_from_the_store(models_dir, tmp_path):
    from gpu_memory import GPUMemoryManager
    from model_manager import ModelManager, ModelUnavailable

    models = ModelManager(GPUMemoryManager(use_gpu=False), models_dir=models_dir)
    assert models.dnsmos_source() == models_dir / "dnsmos" / "sig_bak_ovr.onnx"
    first = models.get_dnsmos()
    assert isinstance(first, DNSMOS) and models.get_dnsmos() is first
    assert models.load_counts[("dnsmos", "p835", "cpu")] == 1
    with pytest.raises(ModelUnavailable, match="DNSMOS model not found.*--prepare_models"):
        ModelManager(GPUMemoryManager(use_gpu=False), models_dir=tmp_path).dnsmos_source()
