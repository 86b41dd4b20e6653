"""ModelManager: every model is loaded once per worker process, cached by (kind, name, device), and reused.

Where a model comes from, in order: a local path given as its name; the local model store (loaders/model_store.py);
the usual download (Whisper's URL, the Hugging Face hub), which is the default for users with internet.
A model that cannot be had raises ModelUnavailable with one line saying what was tried and what to do; the
failure is cached too, so a batch reports it once per worker instead of retrying it for every file.
"""

from __future__ import annotations

import gc
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from loaders.asr import FasterWhisperTranscriber, OpenAIWhisperTranscriber, Transcriber
from gpu_memory import GPUMemoryManager
from loaders.model_store import default_models_dir

log = logging.getLogger("audio_processing")

OFFLINE_DIARIZATION = "offline"  # pyannote segmentation-3.0 + CAM++ from the local store


FETCH_HINT = "run `python audio_processing.py --prepare_models` (or `make models`)"
STORE_HINTS = {
    "whisper": f"give a checkpoint or CTranslate2 folder, or {FETCH_HINT}",
    "demucs": "put <name>.yaml and its <signature>.th in <models_dir>/demucs, or give --demucs_model FOLDER",
    "diarization": "give a local pipeline folder, or use --diarization_model offline",
}


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded here; the message names it, where we looked, and what to do."""


def _return_freed_memory() -> None:
    """glibc keeps freed heap pages for reuse; give them back so a released model shows in the process size."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def looks_like_path(name: str) -> bool:
    """Hub names have one slash (org/model); paths start with /, ./, ../ or ~."""
    return name.startswith(("/", "./", "../", "~"))


def check_local(kind: str, name: str) -> Path:
    path = Path(name).expanduser()
    if looks_like_path(name) and not path.exists():
        raise ModelUnavailable(f"{kind} model path {name} does not exist")
    return path


class ModelManager:
    def __init__(self, gpu_manager: GPUMemoryManager | None = None, models_dir: Path | None = None,
                 hf_token: str | None = None, cpu_threads: int = 1, language: str | None = None,
                 asr_compute_type: str = "auto"):
        self.gpu = gpu_manager or GPUMemoryManager(use_gpu=False)
        self.models_dir = Path(models_dir) if models_dir else default_models_dir()
        self.hf_token = hf_token or os.environ.get("HF_TOKEN")
        self.cpu_threads = cpu_threads
        self.language = language
        self.asr_compute_type = asr_compute_type
        self._models: dict[tuple, Any] = {}
        self.load_counts: Counter = Counter()  # (kind, name, device) -> loads; a test counts them

    # ---- cache ----

    def _get(self, key: tuple, loader: Callable[[], Any]) -> Any:
        if key not in self._models:
            try:
                self._models[key] = loader()
            except ModelUnavailable as error:
                self._models[key] = error
            else:
                # Models and their libraries are ~560,000 objects that live as long as the worker; out of the
                # garbage collector's sight, the cleanup after each file takes 0.28 s less.
                gc.freeze()
                self.load_counts[key] += 1
                log.info("loaded %s model %s on %s", *key[:2], key[-1])
                self.gpu.log_memory()
        model = self._models[key]
        if isinstance(model, ModelUnavailable):
            raise model
        return model

    def release(self) -> None:
        """Drop every cached model and free their memory."""
        self._models.clear()
        gc.unfreeze()  # the dropped models' cycles must be collectable
        self.cleanup()
        _return_freed_memory()

    def cleanup(self) -> None:
        self.gpu.cleanup(force=True)

    def _store(self, *parts: str) -> Path:
        return self.models_dir.joinpath(*parts)

    # ---- Whisper ----

    def get_whisper_model(self, name: str = "base", backend: str = "faster-whisper",
                          device: str | None = None) -> Transcriber:
        device = device or self.gpu.device
        return self._get(("whisper", name, backend, device), lambda: self._load_whisper(name, backend, device))

    def preload_whisper(self, name: str, backend: str) -> None:
        """For a loader that workers are forked from: an openai-whisper model (PyTorch) is loaded and shared;
        faster-whisper's only imported, as CTranslate2's model threads do not survive a fork (a forked worker's
        first call hung: tested), so each worker loads its own."""
        if backend == "openai-whisper":
            self.get_whisper_model(name, backend)
        else:
            import faster_whisper  # noqa: F401 - the import, 1-2 s, is paid once

    def whisper_source(self, name: str, backend: str) -> tuple[str, Path | str]:
        """Where a Whisper model would load from, without loading it: ("checkpoint" | "convert" | "ct2", path)
        or ("download", name); ModelUnavailable when it cannot be had here."""
        path = check_local("whisper", name)
        if backend == "openai-whisper":
            if path.is_file():
                return "checkpoint", path
            if self._store("whisper", f"{name}.pt").exists():
                return "checkpoint", self._store("whisper", f"{name}.pt")
            if (path / "model.bin").exists():
                return "convert", path
        else:
            if path.suffix == ".pt" and path.exists():
                raise ModelUnavailable(f"whisper model {name} is an openai-whisper checkpoint; faster-whisper needs "
                                       "a CTranslate2 folder (use --asr_backend openai-whisper, or give a CT2 folder)")
            folder = path if (path / "model.bin").exists() else self._store("whisper", f"{name}-ct2")
            if (folder / "model.bin").exists():
                return "ct2", folder
        self._require_network("whisper", name)
        return "download", name

    def _load_whisper(self, name: str, backend: str, device: str) -> Transcriber:
        kind, source = self.whisper_source(name, backend)
        try:
            if backend == "openai-whisper":
                from loaders.whisper_convert import load_openai_whisper

                if kind == "download":
                    import whisper

                    model = whisper.load_model(name, device=device, download_root=str(self._store("whisper")))
                else:
                    model = load_openai_whisper(self._openai_checkpoint(source) if kind == "convert" else source,
                                                device)
                return OpenAIWhisperTranscriber(model, self.language)
            from faster_whisper import WhisperModel

            model = WhisperModel(str(source), device=device.split(":")[0], device_index=self.gpu.device_index,
                                 compute_type=self._compute_type(device),
                                 cpu_threads=self.cpu_threads, download_root=str(self._store("whisper")))
            return FasterWhisperTranscriber(model, self.language)
        except Exception as error:  # noqa: BLE001 - reported as one clear line
            raise self._unavailable("whisper", name, error) from error

    def _compute_type(self, device: str) -> str:
        if self.asr_compute_type != "auto":
            return self.asr_compute_type
        return "int8" if device == "cpu" else "float16"  # int8: same words, 1.9x faster on CPU (OPTIMIZATION.md)

    def _openai_checkpoint(self, ct2: Path) -> Path:
        """An openai-whisper checkpoint made once from a CTranslate2 folder, kept in the store."""
        from loaders.whisper_convert import convert_ct2_to_openai

        converted = self._store("whisper", f"{ct2.resolve().name}.openai.pt")
        if not converted.exists():
            log.info("converting the CTranslate2 model %s to %s", ct2, converted)
            convert_ct2_to_openai(ct2, converted, ct2.resolve().name.removesuffix("-ct2"))
        return converted

    # ---- Demucs ----

    def get_demucs_model(self, name: str = "htdemucs", device: str | None = None):
        device = device or self.gpu.device
        return self._get(("demucs", name, device), lambda: self._load_demucs(name, device))

    def demucs_source(self, name: str) -> tuple[str, Path | None]:
        """(the model's name in its repo, the repo folder, or None to download it); ModelUnavailable when it
        cannot be had here."""
        path = check_local("demucs", name)
        if path.is_dir():  # a repo folder: <name>.yaml and/or <signature>.th files
            candidates = sorted(path.glob("*.yaml")) or sorted(path.glob("*.th"))
            if not candidates:
                raise ModelUnavailable(f"demucs model folder {path} holds no .yaml or .th model")
            return candidates[0].stem, path
        if (self._store("demucs") / f"{name}.yaml").exists():
            return name, self._store("demucs")
        self._require_network("demucs", name)
        return name, None

    def _load_demucs(self, name: str, device: str):
        from demucs.pretrained import get_model

        model_name, repo = self.demucs_source(name)
        try:
            model = get_model(model_name, repo=repo)
        except Exception as error:  # noqa: BLE001
            raise self._unavailable("demucs", name, error) from error
        return model.to(device).eval()

    # ---- Silero VAD ----

    def get_vad_model(self):
        # Silero's weights ship inside the silero-vad package: always local.
        return self._get(("vad", "silero", "cpu"), self._load_vad)

    def _load_vad(self):
        import torch

        threads = torch.get_num_threads()  # before the import: importing silero_vad sets one thread
        from silero_vad import load_silero_vad

        model = load_silero_vad(onnx=False)
        torch.set_num_threads(threads)  # importing silero_vad sets torch to 1 thread for the whole process
        return model

    # ---- DeepFilterNet (the offline denoiser) ----

    def get_deepfilternet(self):
        return self._get(("deepfilternet", "DeepFilterNet3", "cpu"), self._load_deepfilternet)

    def deepfilternet_source(self) -> tuple[Path, Path]:
        """(model archive, library) in the store; ModelUnavailable when they are not there."""
        model, library = self._store("deepfilternet", "DeepFilterNet3_onnx.tar.gz"), self._store(
            "deepfilternet", "libdeepfilter.so")
        if not model.exists() or not library.exists():
            raise ModelUnavailable(f"DeepFilterNet3 not found in {self.models_dir / 'deepfilternet'}; "
                                   f"{FETCH_HINT} to fetch it")
        return model, library

    def _load_deepfilternet(self):
        from loaders.deepfilternet import DeepFilterNet3

        return DeepFilterNet3(*self.deepfilternet_source())

    # ---- DNSMOS (speech quality scores) ----

    def get_dnsmos(self):
        return self._get(("dnsmos", "p835", "cpu"), self._load_dnsmos)

    def dnsmos_source(self) -> Path:
        """The DNSMOS P.835 model in the store; ModelUnavailable when it is not there."""
        model = self._store("dnsmos", "sig_bak_ovr.onnx")
        if not model.exists():
            raise ModelUnavailable(f"DNSMOS model not found in {model.parent}; {FETCH_HINT} to fetch it")
        return model

    def _load_dnsmos(self):
        from loaders.dnsmos import DNSMOS

        return DNSMOS(str(self.dnsmos_source()), threads=self.cpu_threads)

    # ---- pyannote ----

    def get_diarization_pipeline(self, name: str = "pyannote/speaker-diarization-3.1", device: str | None = None,
                                 **params):
        device = device or self.gpu.device
        key = ("diarization", name, tuple(sorted(params.items())), device)
        return self._get(key, lambda: self._load_diarization(name, device, params))

    def diarization_source(self, name: str) -> tuple[Path, ...] | str:
        """The offline pipeline's (segmentation, embedding) files, a local pipeline folder (a 1-tuple), or the hub
        name to download; ModelUnavailable when it cannot be had here."""
        if name == OFFLINE_DIARIZATION:
            files = (self._store("pyannote", "segmentation-3.0", "pytorch_model.bin"),
                     self._store("speaker", "campplus_cn_en_common.pt"))
            if not all(path.exists() for path in files):
                raise ModelUnavailable(f"offline diarization models not found in {self.models_dir}; "
                                       f"{FETCH_HINT} to fetch them")
            return files
        path = check_local("diarization", name)
        if path.exists():
            return (path,)
        if not self.hf_token:
            raise ModelUnavailable(f"diarization model {name} needs a Hugging Face token: accept the model's "
                                   "terms on its hub page, then pass --hf_token or set HF_TOKEN "
                                   f"(or use --diarization_model {OFFLINE_DIARIZATION} / a local pipeline folder)")
        self._require_network("diarization", name)
        return name

    def _load_diarization(self, name: str, device: str, params: dict):
        os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")  # no usage telemetry from private recordings
        import torch

        source = self.diarization_source(name)
        if name == OFFLINE_DIARIZATION:
            from loaders.speaker_embedding import build_offline_pipeline

            return build_offline_pipeline(*source, device=device, **params)
        from pyannote.audio import Pipeline

        try:
            pipeline = Pipeline.from_pretrained(source[0] if isinstance(source, tuple) else source,
                                                token=self.hf_token)
        except Exception as error:  # noqa: BLE001
            raise self._unavailable("diarization", name, error) from error
        if pipeline is None:
            raise ModelUnavailable(f"diarization model {name} could not be loaded (token refused, or terms "
                                   "not accepted on its hub page)")
        return pipeline.to(torch.device(device))

    def _require_network(self, kind: str, name: str) -> None:
        """Skip a download that cannot work: these loaders do not look at HF_HUB_OFFLINE themselves."""
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ModelUnavailable(f"{kind} model '{name}' is not a local path or in the store {self.models_dir}, "
                                   f"and there is no connection to download it; {STORE_HINTS[kind]}")

    def _unavailable(self, kind: str, name: str, error: BaseException) -> ModelUnavailable:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return ModelUnavailable(f"{kind} model '{name}' could not be loaded ({reason[:200]}); {STORE_HINTS[kind]}")
