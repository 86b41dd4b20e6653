"""SI-SDR of real speech mixed with noise or music, before and after the denoise stage.

    .venv/bin/python bench/denoise_sisdr.py [--denoiser deepfilternet] [--models_dir DIR]

Speech: the five LibriVox sentences joined (24.7 s) and the pyannote sample (30 s), 16 kHz. Noises: white,
pink (1/f, made here from a fixed seed), and music (the noise/vibe_ace_30s.flac recording), mixed at
0, 5 and 10 dB SNR (whole-file RMS ratio). The denoised audio comes from the real denoise stage (blocks,
resampling to the model's rate and back). Only DeepFilterNet3 has real weights offline; Demucs needs its
pretrained htdemucs (pass --demucs_model FOLDER where you have it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # conftest: the test helpers (SI-SDR, part collector)
from loaders.model_store import default_models_dir  # noqa: E402
from sample_data import glob as data_glob, resolve as data  # noqa: E402  (recordings by name)


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(length))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    return np.fft.irfft(spectrum, length)


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    noise = np.resize(noise, len(speech))
    noise = noise * np.sqrt(np.mean(speech ** 2) / np.mean(noise ** 2)) / 10 ** (snr_db / 20)
    return speech + noise


def speech_clips() -> dict[str, np.ndarray]:
    import soundfile as sf

    librivox = np.concatenate([sf.read(p, dtype="float64")[0] for p in data_glob("librivox/*.flac")])
    sample, _ = sf.read(data("pyannote_sample/sample.flac"), dtype="float64")
    return {"librivox": librivox, "pyannote_sample": sample}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--denoiser", default="deepfilternet", choices=("deepfilternet", "demucs"))
    parser.add_argument("--demucs_model", default="htdemucs")
    parser.add_argument("--models_dir", type=Path, default=default_models_dir())
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import soundfile as sf
    import torch

    from config import RunConfig
    from gpu_memory import GPUMemoryManager
    from model_manager import ModelManager
    from loaders.model_store import disable_downloads_when_offline
    from batch.jobs import FileJob
    from conftest import part_collector, si_sdr
    from batch.pipeline import process_file

    disable_downloads_when_offline()
    torch.set_num_threads(args.threads)
    models = ModelManager(GPUMemoryManager(use_gpu=False), models_dir=args.models_dir, cpu_threads=args.threads)
    rng = np.random.default_rng(0)
    music, _ = sf.read(data("noise/vibe_ace_30s.flac"), dtype="float64")
    work = Path(tempfile.mkdtemp(prefix="sisdr-"))
    print(f"SI-SDR in dB, {args.denoiser}: before -> after (gain)")
    print(f"{'speech':16s} {'noise':6s} " + "  ".join(f"{snr:>5d} dB SNR          " for snr in (0, 5, 10)))
    gains = []
    for name, speech in speech_clips().items():
        for noise_name in ("white", "pink", "music"):
            noise = {"white": rng.standard_normal(len(speech)), "pink": pink_noise(len(speech), rng),
                     "music": music}[noise_name]
            cells = []
            for snr in (0, 5, 10):
                noisy = mix(speech, noise, snr)
                source = work / f"{name}_{noise_name}_{snr}.wav"
                sf.write(source, noisy.astype(np.float32), 16000, subtype="FLOAT")
                config = RunConfig(input=source, output=work / "out", steps=("denoise",), denoiser=args.denoiser,
                                   demucs_model=args.demucs_model, models_dir=args.models_dir)
                records = []
                report = process_file(FileJob(0, source, source.stem), config, models,
                                      part_collector(records))
                if report["stages"]["denoise"]["method"] != args.denoiser:
                    raise SystemExit(f"{args.denoiser} did not run: {report['notes']}")
                denoised, _ = sf.read(work / "out" / records[0]["outputs"]["denoise"], dtype="float64")
                before, after = si_sdr(speech, noisy), si_sdr(speech, denoised)
                gains.append(after - before)
                cells.append(f"{before:5.1f} -> {after:5.1f} ({after - before:+5.1f})")
            print(f"{name:16s} {noise_name:6s} " + "  ".join(cells))
    print(f"median gain {np.median(gains):+.1f} dB")


if __name__ == "__main__":
    main()
