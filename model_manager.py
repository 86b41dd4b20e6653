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


STORE_HINTS = {
    "whisper": "give a checkpoint or CTranslate2 folder, or fill the store with --prepare_models",
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

    def _load_whisper(self, name: str, backend: str, device: str) -> Transcriber:
        path = check_local("whisper", name)
        if backend == "openai-whisper":
            checkpoint = self._openai_checkpoint(name, path)
            try:
                if checkpoint is not None:
                    from loaders.whisper_convert import load_openai_whisper

                    return OpenAIWhisperTranscriber(load_openai_whisper(checkpoint, device), self.language)
                import whisper

                self._require_network("whisper", name)
                model = whisper.load_model(name, device=device, download_root=str(self._store("whisper")))
                return OpenAIWhisperTranscriber(model, self.language)
            except Exception as error:  # noqa: BLE001 - reported as one clear line
                raise self._unavailable("whisper", name, error) from error
        folder = path if (path / "model.bin").exists() else self._store("whisper", f"{name}-ct2")
        source = str(folder) if (folder / "model.bin").exists() else name
        if path.suffix == ".pt" and path.exists():
            raise ModelUnavailable(f"whisper model {name} is an openai-whisper checkpoint; faster-whisper needs a "
                                   "CTranslate2 folder (use --asr_backend openai-whisper, or give a CT2 folder)")
        try:
            from faster_whisper import WhisperModel

            model = WhisperModel(source, device=device.split(":")[0], device_index=self.gpu.device_index,
                                 compute_type=self._compute_type(device),
                                 cpu_threads=self.cpu_threads, download_root=str(self._store("whisper")))
            return FasterWhisperTranscriber(model, self.language)
        except Exception as error:  # noqa: BLE001
            raise self._unavailable("whisper", name, error) from error

    def _compute_type(self, device: str) -> str:
        if self.asr_compute_type != "auto":
            return self.asr_compute_type
        return "int8" if device == "cpu" else "float16"  # int8: same words, 1.9x faster on CPU (OPTIMIZATION.md)

    def _openai_checkpoint(self, name: str, path: Path) -> Path | None:
        """A local openai-whisper checkpoint for this name, converting a CTranslate2 folder once if needed."""
        if path.is_file():
            return path
        stored = self._store("whisper", f"{name}.pt")
        if stored.exists():
            return stored
        ct2 = path if (path / "model.bin").exists() else None
        if ct2 is not None:
            from loaders.whisper_convert import convert_ct2_to_openai

            converted = self._store("whisper", f"{path.resolve().name}.openai.pt")
            if not converted.exists():
                log.info("converting the CTranslate2 model %s to %s", path, converted)
                convert_ct2_to_openai(ct2, converted, path.resolve().name.removesuffix("-ct2"))
            return converted
        return None

    # ---- Demucs ----

    def get_demucs_model(self, name: str = "htdemucs", device: str | None = None):
        device = device or self.gpu.device
        return self._get(("demucs", name, device), lambda: self._load_demucs(name, device))

    def _load_demucs(self, name: str, device: str):
        from demucs.pretrained import get_model

        path = check_local("demucs", name)
        try:
            if path.is_dir():  # a repo folder: <name>.yaml and/or <signature>.th files
                candidates = sorted(path.glob("*.yaml")) or sorted(path.glob("*.th"))
                if not candidates:
                    raise ModelUnavailable(f"demucs model folder {path} holds no .yaml or .th model")
                model = get_model(candidates[0].stem, repo=path)
            elif (self._store("demucs") / f"{name}.yaml").exists():
                model = get_model(name, repo=self._store("demucs"))
            else:
                self._require_network("demucs", name)
                model = get_model(name)
        except ModelUnavailable:
            raise
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

    def _load_deepfilternet(self):
        model, library = self._store("deepfilternet", "DeepFilterNet3_onnx.tar.gz"), self._store(
            "deepfilternet", "libdeepfilter.so")
        if not model.exists() or not library.exists():
            raise ModelUnavailable(f"DeepFilterNet3 not found in {self.models_dir / 'deepfilternet'}; "
                                   "run `python audio_processing.py --prepare_models` to fetch it")
        from loaders.deepfilternet import DeepFilterNet3

        return DeepFilterNet3(model, library)

    # ---- pyannote ----

    def get_diarization_pipeline(self, name: str = "pyannote/speaker-diarization-3.1", device: str | None = None,
                                 **params):
        device = device or self.gpu.device
        key = ("diarization", name, tuple(sorted(params.items())), device)
        return self._get(key, lambda: self._load_diarization(name, device, params))

    def offline_diarization_available(self) -> bool:
        return self._store("pyannote", "segmentation-3.0", "pytorch_model.bin").exists() and \
            self._store("speaker", "campplus_cn_en_common.pt").exists()

    def _load_diarization(self, name: str, device: str, params: dict):
        os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")  # no usage telemetry from private recordings
        import torch

        if name == OFFLINE_DIARIZATION:
            if not self.offline_diarization_available():
                raise ModelUnavailable(f"offline diarization models not found in {self.models_dir}; "
                                       "run `python audio_processing.py --prepare_models` to fetch them")
            from loaders.speaker_embedding import build_offline_pipeline

            return build_offline_pipeline(self._store("pyannote", "segmentation-3.0", "pytorch_model.bin"),
                                          self._store("speaker", "campplus_cn_en_common.pt"),
                                          device=device, **params)
        from pyannote.audio import Pipeline

        path = check_local("diarization", name)
        if not path.exists() and not self.hf_token:
            raise ModelUnavailable(f"diarization model {name} needs a Hugging Face token: accept the model's "
                                   "terms on its hub page, then pass --hf_token or set HF_TOKEN "
                                   f"(or use --diarization_model {OFFLINE_DIARIZATION} / a local pipeline folder)")
        try:
            pipeline = Pipeline.from_pretrained(path if path.exists() else name, token=self.hf_token)
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
