"""denoise: Demucs from a local repo folder, block processing, output format; the offline fallback.

No trained Demucs weights can be had without a model hub, so the Demucs tests use a small untrained HTDemucs
saved the way Demucs saves its models: it exercises loading, resampling, channel handling and the block
processing, not separation quality. DeepFilterNet3 has real weights here: its quality is asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import data, si_sdr


def demucs_vocals(repo, audio: np.ndarray, rate: int) -> np.ndarray:
    """The vocals stem straight from Demucs' own apply_model, for (frames, channels) audio at its own rate and
    channel count, levelled as the denoise stage levels a part (mean and deviation of its mono mix)."""
    import torchaudio.functional as F
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    model = get_model("tiny_htdemucs", repo=repo).eval()
    mono = audio.mean(axis=1)
    mean, std = mono.mean(), mono.std()
    mix = torch.from_numpy(audio.T.astype(np.float32))
    mix = F.resample(mix.mean(0, keepdim=True).expand(2, -1) if mix.shape[0] == 1 else mix, rate, model.samplerate)
    with torch.inference_mode():
        vocals = apply_model(model, ((mix - mean) / std)[None], shifts=0, split=True, overlap=0.25)[0, 3]
    vocals = F.resample(vocals * std + mean, model.samplerate, rate)
    return (vocals.mean(0, keepdim=True) if audio.shape[1] == 1 else vocals).T.numpy()[: len(audio)]


@pytest.mark.parametrize("source", [data("jfk/jfk.flac"), data("pyannote_sample/sample.flac")],
                         ids=["44k-stereo-24bit", "16k-mono"])
def test_demucs_from_local_repo_keeps_format(process, demucs_repo, source):
    report, records, output = process(source, steps=("denoise",), demucs_model=str(demucs_repo))
    assert report["status"] == "done" and not report["notes"], report
    assert report["stages"]["denoise"]["method"] == "demucs"
    denoised = output / records[0]["outputs"]["denoise"]
    info, original = sf.info(denoised), sf.info(source)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == \
        (original.samplerate, original.channels, original.frames, original.subtype)
    audio, _ = sf.read(denoised, always_2d=True)
    source_audio, rate = sf.read(source, always_2d=True)
    # one block (the file is shorter than a minute): exactly Demucs' vocals, up to the output's quantization
    step = 2.0 ** -(int(info.subtype.removeprefix("PCM_")) - 1)
    assert np.abs(demucs_vocals(demucs_repo, source_audio, rate) - audio).max() <= 1.5 * step


def test_demucs_blocks_leave_no_seam(process, demucs_repo, tmp_path, monkeypatch):
    """A 70 s part goes through in two blocks, each at its own length (the 10 s one is not padded to a minute to
    share a batch); where both see the same Demucs chunks, the result equals the model applied to the whole part,
    and the block edge leaves no seam."""
    from demucs.htdemucs import HTDemucs

    speech, rate = sf.read(data("pyannote_sample/sample.flac"), dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(speech, 5)[: 70 * rate], rate, subtype="FLOAT")
    passes, forward = [], HTDemucs.forward
    monkeypatch.setattr(HTDemucs, "forward", lambda self, mix: passes.append(mix.shape[0]) or forward(self, mix))
    report, records, output = process(long, steps=("denoise",), demucs_model=str(demucs_repo))
    assert report["status"] == "done", report
    # segment 4 s, stride 3 s: 62 s (one side of context) in 21 passes, 12 s in 4; padded together, 2 x 21
    assert sum(passes) == 25, passes
    blockwise, _ = sf.read(output / records[0]["outputs"]["denoise"], dtype="float32")
    assert len(blockwise) == 70 * rate

    whole = demucs_vocals(demucs_repo, np.tile(speech, 5)[: 70 * rate, None], rate)[:, 0]
    # Up to 2 s before the first block's end, both see the same Demucs chunks: the same samples. Past it, the
    # chunking differs (an untrained model is not shift-invariant); what matters there is that the block edge
    # at 60 s leaves no jump.
    assert si_sdr(whole[: 55 * rate], blockwise[: 55 * rate]) > 40
    steps = np.abs(np.diff(blockwise))
    seam = 60 * rate
    assert steps[seam - 2: seam + 2].max() <= np.percentile(steps[seam - rate: seam + rate], 99.9)


def test_demucs_unavailable_falls_back_to_deepfilternet(process, tmp_path):
    """Offline, htdemucs cannot be downloaded: one note, and DeepFilterNet3 cleans the speech instead."""
    clean, rate = sf.read(data("librivox/sense_and_sensibility_01_austen_64kb-0870.flac"), dtype="float64")
    rng = np.random.default_rng(1)
    noise = np.cumsum(rng.standard_normal(len(clean)))  # brown-ish noise, then whitened a little
    noise = np.diff(noise, prepend=0) + 0.1 * noise / np.abs(noise).max()
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2)) / 10 ** (5 / 20)  # 5 dB SNR
    noisy_path = tmp_path / "noisy.wav"
    sf.write(noisy_path, (clean + noise).astype(np.float32), rate, subtype="FLOAT")
    report, records, output = process(noisy_path, steps=("denoise",), demucs_model="htdemucs")
    assert report["status"] == "done"
    assert report["stages"]["denoise"]["method"] == "deepfilternet"
    assert [note for note in report["notes"] if "used deepfilternet instead of demucs" in note and "htdemucs" in note]
    assert records[0]["denoiser"] == "deepfilternet" and "htdemucs" in records[0]["denoiser_fallback"]
    denoised, _ = sf.read(output / records[0]["outputs"]["denoise"], dtype="float64")
    assert len(denoised) == len(clean)
    before, after = si_sdr(clean, clean + noise), si_sdr(clean, denoised)
    assert after - before > 5, (before, after)


def test_a_part_shorter_than_the_demucs_segment_takes_one_pass(process, demucs_repo, tmp_path, monkeypatch):
    """Demucs' own chunking would run 3.5 s (segment 4 s) as two padded passes; one pass gives the same audio
    the model gives the whole part at once."""
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs
    from demucs.pretrained import get_model

    speech, rate = sf.read(data("pyannote_sample/sample.flac"), dtype="float32")
    short = tmp_path / "short.wav"
    sf.write(short, speech[: int(3.5 * rate)], rate, subtype="FLOAT")
    passes, forward = [], HTDemucs.forward
    monkeypatch.setattr(HTDemucs, "forward", lambda self, mix: passes.append(mix.shape) or forward(self, mix))
    report, records, output = process(short, steps=("denoise",), demucs_model=str(demucs_repo))
    assert report["status"] == "done" and len(passes) == 1, passes
    denoised, _ = sf.read(output / records[0]["outputs"]["denoise"], dtype="float32")
    assert len(denoised) == int(3.5 * rate)

    import torchaudio.functional as F

    model = get_model("tiny_htdemucs", repo=demucs_repo).eval()
    mix = F.resample(torch.from_numpy(speech[: int(3.5 * rate)]), rate, 44100).expand(2, -1)
    mean, std = mix.mean(), mix.std()
    with torch.inference_mode():
        whole = apply_model(model, ((mix - mean) / std)[None], shifts=0, split=False)[0, 3] * std + mean
    whole = F.resample(whole.mean(0), 44100, rate).numpy()[: len(denoised)]
    assert np.allclose(whole, denoised, atol=1e-4)
