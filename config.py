"""The run's settings, one dataclass shared by the command line, the interactive prompt and the workers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

STEPS = ("split", "denoise", "vad", "diar")
COMPUTE_TYPES = ("auto", "int8", "float32", "float16", "int8_float16")  # CTranslate2's names


@dataclass
class RunConfig:
    input: Path
    output: Path
    steps: tuple[str, ...] = STEPS
    # split
    split_method: str = "time"
    chunk_duration: float = 300.0
    asr_backend: str = "faster-whisper"
    asr_compute_type: str = "auto"  # faster-whisper: int8 on CPU, float16 on GPU
    whisper_model: str = "base"
    language: str | None = None
    # denoise
    denoiser: str = "demucs"
    demucs_model: str = "htdemucs"
    demucs_segment: float | None = None  # seconds per Demucs forward pass; None = the model's own
    batch_size: int = 2  # one-minute denoise blocks per model call (the seed guide's BATCH_SIZE)
    # vad
    vad_threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30
    # diar
    diarization_model: str = "pyannote/speaker-diarization-3.1"
    hf_token: str | None = field(default=None, repr=False)
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    clustering_threshold: float = 0.8
    min_cluster_size: int = 4
    segmentation_step: float = 0.2
    embedding_batch_size: int = 32
    # models and resources
    models_dir: Path | None = None
    use_gpu: bool = False
    gpu_memory_limit: float = 0.75
    workers: int | None = None
    timeout: float = 7200.0
    backend: str = "local"  # or "ray"
    ray_address: str | None = None  # None: start a Ray instance on this machine

    def public_dict(self) -> dict:
        """The settings as JSON-friendly values, without secrets (saved with the results)."""
        values = {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(self).items()}
        values["steps"] = list(self.steps)
        values["hf_token"] = "***" if self.hf_token else None
        return values

    def to_toml(self) -> str:
        """The settings as a --config file that repeats this run (the token is left out; unset values too)."""
        lines = ["# audio_processing settings; rerun with: python audio_processing.py --config <this file>"]
        for key, value in self.public_dict().items():
            if key in ("input", "output", "models_dir") and value:
                value = str(Path(value).absolute())  # the file repeats the run from any folder
            if value is not None and key != "hf_token":
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string
