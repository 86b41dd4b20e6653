"""denoise: keep the voice, remove music and noise (Demucs vocals; DeepFilterNet3 when Demucs cannot load).

The part is enhanced in blocks of a minute with two seconds of context on each side, so memory stays bounded
however long the part is and block edges leave no seam. Each block goes to the model's rate and channel
count and comes back to the part's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from audio_io import AudioWriter, as_float, open_audio, read_frames
from model_manager import ModelUnavailable
from options import Option, positive
from stages.base import FileContext, Output, Part, Stage, resample

if TYPE_CHECKING:  # torch is imported where it is used: the main process imports the stages and needs no torch
    import torch

BLOCK_SECONDS = 60
CONTEXT_SECONDS = 2.0
METHODS = ("demucs", "deepfilternet")

Enhancer = Callable[["torch.Tensor", str], "torch.Tensor"]  # (batch, channels, samples) at the model's rate, device


def in_order(config) -> list[str]:
    """The method asked for, then the others: the first that loads is used."""
    return [config.denoiser] + [method for method in METHODS if method != config.denoiser]


class Denoise(Stage):
    name = "denoise"
    summary = "keep the voice, remove music and noise"
    options = (
        Option("denoiser", "demucs", "denoise method; demucs falls back to deepfilternet when it cannot load",
               choices=METHODS, question="Denoiser (demucs / deepfilternet)"),
        Option("demucs_model", "htdemucs", "Demucs model name or repo folder"),
        Option("demucs_segment", None, "seconds of audio per Demucs pass", positive(float),
               default_text="the model's own, 7.8 for htdemucs"),
        Option("batch_size", None, "one-minute denoise blocks sent to the model together", positive(int),
               default_text="2 on a GPU, 1 on the CPU"),
    )
    outputs = {"denoise": Output("denoised", ".wav")}
    changes_audio = True
    manifest_fields = ("denoiser", "denoiser_fallback")
    RATES = {"demucs": 0.540, "deepfilternet": 0.074}  # measured real-time factors

    @classmethod
    def describe(cls, config) -> str:
        return config.denoiser

    @classmethod
    def real_time_factor(cls, config) -> float:
        return cls.RATES[config.denoiser]

    @classmethod
    def locate_models(cls, config, models) -> tuple[str, str | None]:
        problems = []
        for method in in_order(config):
            try:
                if method == "demucs":
                    name, repo = models.demucs_source(config.demucs_model)
                    found = f"demucs {name} " + (f"from {repo}" if repo else "(downloaded)")
                else:
                    found = f"deepfilternet DeepFilterNet3 from {models.deepfilternet_source()[0].parent}"
            except ModelUnavailable as error:
                problems.append(str(error))
                continue
            return found, "; ".join(problems) or None
        raise ModelUnavailable("; ".join(problems))

    @staticmethod
    def settings(config) -> dict:
        return {"denoiser": config.denoiser, "demucs_model": config.demucs_model,
                "demucs_segment": config.demucs_segment}

    def restore(self, part: Part, record: dict, ctx: FileContext) -> None:
        super().restore(part, record, ctx)
        part.set_audio(open_audio(ctx.output_root / record["outputs"]["denoise"], ctx.scratch_dir))
        if "denoiser_fallback" in record:
            ctx.fallback(self.name, record["denoiser"], self.config.denoiser, record["denoiser_fallback"])

    def preload(self) -> None:
        for method in in_order(self.config):
            try:
                self._model(method)
                return
            except ModelUnavailable:
                continue

    def _model(self, method: str):
        if method == "demucs":
            return self.models.get_demucs_model(self.config.demucs_model)
        return self.models.get_deepfilternet()

    def run(self, part: Part, ctx: FileContext) -> Iterator[Part]:
        method, enhancer, rate, channels = self._enhancer(part, ctx)
        if enhancer is None:
            yield part
            return
        path = self.output_path(ctx, "denoise", part)
        with AudioWriter(path, part.sample_rate, part.channels, part.audio.write_subtype) as writer:
            for block in enhance_in_blocks(part, rate, channels, enhancer, self.models.gpu, ctx, self._batch_size()):
                writer.write(block)
        part.set_audio(open_audio(path, ctx.scratch_dir))
        part.outputs["denoise"] = ctx.relative(path)
        part.fields["denoiser"] = method
        yield part

    def _batch_size(self) -> int:
        """On the CPU a second block in the batch is not faster, and a Demucs pass over two blocks holds ~0.5 GB
        more (bench/working_memory.py)."""
        return self.config.batch_size or (2 if self.models.gpu.enabled else 1)

    def _enhancer(self, part: Part, ctx: FileContext) -> tuple[str, Enhancer | None, int, int]:
        """The first method that loads, from the one asked for; a fallback is noted once per file."""
        wanted = self.config.denoiser
        problems = []
        for method in in_order(self.config):
            try:
                enhancer, rate, channels = getattr(self, f"_{method}")(part)
            except ModelUnavailable as error:
                problems.append(str(error))
                continue
            if problems:
                part.fields["denoiser_fallback"] = "; ".join(problems)  # why, in the manifest too
                ctx.fallback(self.name, method, wanted, "; ".join(problems))
            ctx.stage_info.setdefault(self.name, {})["method"] = method
            return method, enhancer, rate, channels
        ctx.skip(self.name, "; ".join(problems))
        ctx.stage_info.setdefault(self.name, {})["method"] = "none"
        return "none", None, 0, 0

    def _demucs(self, part: Part) -> tuple[Enhancer, int, int]:
        import torch
        from demucs.apply import apply_model

        name = self.config.demucs_model
        model = self._model("demucs")  # loads (or fails) once, before any work
        vocals = model.sources.index("vocals")
        # Demucs expects input normalised by the whole track's level; one level for the part keeps the gain
        # the same in every block.
        mean, std = level(part)

        def enhance(audio: torch.Tensor, device: str) -> torch.Tensor:
            net = self.models.get_demucs_model(name, device=device)
            segment = self.config.demucs_segment or min(float(m.segment) for m in getattr(net, "models", [net]))
            # Demucs cuts from every multiple of 3/4 segment, so audio a little shorter than one segment costs two
            # passes; one padded pass does it (the model pads short input itself). Halves denoise for short parts.
            split = audio.shape[-1] > segment * net.samplerate
            with torch.inference_mode():
                sources = apply_model(net, (audio - mean) / std, shifts=0, split=split, overlap=0.25,
                                      segment=self.config.demucs_segment, device=device, progress=False)
            return sources[:, vocals].cpu() * std + mean

        return enhance, model.samplerate, model.audio_channels

    def _deepfilternet(self, part: Part) -> tuple[Enhancer, int, int]:
        import torch

        model = self._model("deepfilternet")

        def enhance(audio: torch.Tensor, device: str) -> torch.Tensor:
            return torch.stack([torch.from_numpy(model.process(block.numpy())) for block in audio])

        return enhance, model.sample_rate, 1


def level(part: Part) -> tuple[float, float]:
    """Mean and standard deviation of the part's mono mix, in one streaming pass."""
    count, total, squares = 0, 0.0, 0.0
    for block in part.blocks(BLOCK_SECONDS * part.sample_rate):
        mono = as_float(block).mean(axis=1, dtype=np.float64)
        count, total, squares = count + len(mono), total + mono.sum(), squares + (mono ** 2).sum()
    mean = total / max(1, count)
    return mean, float(np.sqrt(max(0.0, squares / max(1, count) - mean ** 2))) + 1e-8


def adapt_channels(audio: torch.Tensor, channels: int) -> torch.Tensor:
    """(c, n) -> (channels, n): mono is repeated, more channels than wanted are mixed down."""
    if audio.shape[0] == channels:
        return audio
    mono = audio.mean(0, keepdim=True)
    return mono.expand(channels, -1).contiguous()


def enhance_in_blocks(part: Part, model_rate: int, model_channels: int, enhance: Enhancer, gpu, ctx: FileContext,
                      batch_size: int = 1) -> Iterator[np.ndarray]:
    """Yields the enhanced part as float32 (frames, channels) blocks; batch_size blocks go to the model at once."""
    import torch

    block = BLOCK_SECONDS * part.sample_rate
    context = round(CONTEXT_SECONDS * part.sample_rate)
    cores = [(start, min(start + block, part.frames)) for start in range(0, part.frames, block)]
    # A shorter last block goes alone: in a batch it would be padded to a full block and cost as much.
    full = [core for core in cores if core[1] - core[0] == block]
    groups = [full[i: i + batch_size] for i in range(0, len(full), batch_size)] + [[c] for c in cores[len(full):]]
    for group in groups:
        spans = [(max(0, start - context), min(part.frames, end + context)) for start, end in group]
        inputs = []
        for first, last in spans:
            samples = as_float(read_frames(part.audio, part.audio_start + first, last - first))
            inputs.append(resample(adapt_channels(torch.from_numpy(samples.T.copy()), model_channels),
                                   part.sample_rate, model_rate))
        longest = max(audio.shape[1] for audio in inputs)  # only the last block of a part is shorter
        batch = torch.stack([torch.nn.functional.pad(audio, (0, longest - audio.shape[1])) for audio in inputs])
        def run(device: str, reduced: bool) -> torch.Tensor:
            if reduced:  # after an out-of-memory error: one block at a time
                return torch.cat([enhance(one[None], device) for one in batch])
            return enhance(batch, device)

        outputs = gpu.run_with_fallback(run, "denoise", on_fallback=ctx.note)
        for (start, end), (first, _last), audio, out in zip(group, spans, inputs, outputs):
            out = adapt_channels(resample(out[:, : audio.shape[1]], model_rate, part.sample_rate), part.channels)
            core = out[:, start - first: end - first]
            if core.shape[1] < end - start:  # resampling can round one frame short
                core = torch.nn.functional.pad(core, (0, end - start - core.shape[1]))
            yield core.T.numpy().astype(np.float32)
