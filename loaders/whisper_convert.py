"""CTranslate2 Whisper weights -> an openai-whisper checkpoint, and a loader that keeps word timestamps right.

The offline Whisper weights ship in CTranslate2 format (for faster-whisper). openai-whisper loads a checkpoint
file `{"dims": ..., "model_state_dict": ...}`; the tensors are the same, under other names, with attention
projections fused in CTranslate2. Word timestamps need the model's alignment heads, which a checkpoint loaded
from a path does not get: they are stored in the checkpoint here (from the CT2 config.json) and restored on load.

    python -m loaders.whisper_convert CT2_DIR OUT.pt
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2_variables(model_bin: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model.bin (binary version 5+), aliases resolved."""
    data = Path(model_bin).read_bytes()
    position = 0

    def number(fmt: str) -> int:
        nonlocal position
        (value,) = struct.unpack_from(fmt, data, position)
        position += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal position
        length = number("H")  # includes the trailing NUL
        text = data[position: position + length - 1].decode("utf-8")
        position += length
        return text

    version = number("I")
    if version < 5:
        raise ValueError(f"{model_bin}: CTranslate2 binary version {version} is too old (need 5 or newer)")
    spec = string()
    if spec != "WhisperSpec":
        raise ValueError(f"{model_bin}: a {spec} model, not Whisper")
    number("I")  # spec revision
    variables = {}
    for _ in range(number("I")):
        name = string()
        shape = [number("I") for _ in range(number("B"))]
        dtype = number("B")
        size = number("I")
        if dtype not in CT2_DTYPES:
            raise ValueError(f"{model_bin}: variable {name} has unsupported type id {dtype} (quantized model?)")
        raw = np.frombuffer(data, dtype=CT2_DTYPES[dtype], count=size // np.dtype(CT2_DTYPES[dtype]).itemsize,
                            offset=position)
        variables[name] = raw.reshape(shape)
        position += size
    for _ in range(number("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return variables


def _layer_count(variables: dict, prefix: str) -> int:
    return len({name.split("/")[1] for name in variables
                if name.startswith(f"{prefix}/layer_") and name.split("/")[1][6:].isdigit()})


def _attention(out: dict, variables: dict, source: str, target: str, fused: str) -> None:
    """CT2 fuses the projections (q;k;v or k;v) along the first axis; openai's key projection has no bias."""
    weight, bias = variables[f"{source}/weight"], variables[f"{source}/bias"]
    names = {"qkv": ("query", "key", "value"), "kv": ("key", "value")}[fused]
    for name, w, b in zip(names, np.split(weight, len(names)), np.split(bias, len(names))):
        out[f"{target}.{name}.weight"] = w
        if name != "key":
            out[f"{target}.{name}.bias"] = b


def _linear(out: dict, variables: dict, source: str, target: str) -> None:
    out[f"{target}.weight"], out[f"{target}.bias"] = variables[f"{source}/weight"], variables[f"{source}/bias"]


def _norm(out: dict, variables: dict, source: str, target: str) -> None:
    out[f"{target}.weight"], out[f"{target}.bias"] = variables[f"{source}/gamma"], variables[f"{source}/beta"]


def ct2_to_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(dims, state dict) of the openai-whisper model holding these weights."""
    out: dict[str, np.ndarray] = {}
    for part in ("encoder", "decoder"):
        for i in range(_layer_count(variables, part)):
            layer, block = f"{part}/layer_{i}", f"{part}.blocks.{i}"
            _norm(out, variables, f"{layer}/self_attention/layer_norm", f"{block}.attn_ln")
            _attention(out, variables, f"{layer}/self_attention/linear_0", f"{block}.attn", "qkv")
            _linear(out, variables, f"{layer}/self_attention/linear_1", f"{block}.attn.out")
            if part == "decoder":
                _norm(out, variables, f"{layer}/attention/layer_norm", f"{block}.cross_attn_ln")
                _linear(out, variables, f"{layer}/attention/linear_0", f"{block}.cross_attn.query")
                _attention(out, variables, f"{layer}/attention/linear_1", f"{block}.cross_attn", "kv")
                _linear(out, variables, f"{layer}/attention/linear_2", f"{block}.cross_attn.out")
            _norm(out, variables, f"{layer}/ffn/layer_norm", f"{block}.mlp_ln")
            _linear(out, variables, f"{layer}/ffn/linear_0", f"{block}.mlp.0")
            _linear(out, variables, f"{layer}/ffn/linear_1", f"{block}.mlp.2")
        out[f"{part}.positional_embedding"] = variables[f"{part}/position_encodings/encodings"]
    _linear(out, variables, "encoder/conv1", "encoder.conv1")
    _linear(out, variables, "encoder/conv2", "encoder.conv2")
    _norm(out, variables, "encoder/layer_norm", "encoder.ln_post")
    _norm(out, variables, "decoder/layer_norm", "decoder.ln")
    out["decoder.token_embedding.weight"] = variables["decoder/embeddings/weight"]
    conv1, embeddings = variables["encoder/conv1/weight"], variables["decoder/embeddings/weight"]
    dims = {
        "n_mels": conv1.shape[1], "n_vocab": embeddings.shape[0],
        "n_audio_ctx": variables["encoder/position_encodings/encodings"].shape[0],
        "n_audio_state": conv1.shape[0], "n_audio_head": int(variables["encoder/num_heads"]),
        "n_audio_layer": _layer_count(variables, "encoder"),
        "n_text_ctx": variables["decoder/position_encodings/encodings"].shape[0],
        "n_text_state": embeddings.shape[1], "n_text_head": int(variables["decoder/num_heads"]),
        "n_text_layer": _layer_count(variables, "decoder"),
    }
    state = {name: torch.from_numpy(np.array(value, dtype=np.float16)) for name, value in out.items()}
    return {key: int(value) for key, value in dims.items()}, state


def convert_ct2_to_openai(ct2_dir: Path, out_file: Path, model_name: str | None = None) -> Path:
    """Write an openai-whisper checkpoint for the CTranslate2 model in ct2_dir (never half-written)."""
    ct2_dir, out_file = Path(ct2_dir), Path(out_file)
    dims, state = ct2_to_state_dict(read_ct2_variables(ct2_dir / "model.bin"))
    config = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").exists() else {}
    checkpoint = {"dims": dims, "model_state_dict": state, "alignment_heads": config.get("alignment_heads"),
                  "model_name": model_name or ct2_dir.name}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{out_file.name}.", dir=out_file.parent)
    os.close(handle)
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, out_file)
    except BaseException:
        os.unlink(tmp)
        raise
    return out_file


def load_openai_whisper(checkpoint_path: Path, device: str = "cpu", model_name: str | None = None):
    """An openai-whisper model from a checkpoint file, with its alignment heads (needed for word timestamps)."""
    import whisper
    from whisper.model import ModelDimensions, Whisper

    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    model = Whisper(ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    heads = checkpoint.get("alignment_heads")
    name = model_name or checkpoint.get("model_name")
    if heads:
        mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    elif name in whisper._ALIGNMENT_HEADS:  # an official openai checkpoint
        model.set_alignment_heads(whisper._ALIGNMENT_HEADS[name])
    return model.to(device)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m loaders.whisper_convert CT2_DIR OUT.pt")
    print(convert_ct2_to_openai(Path(sys.argv[1]), Path(sys.argv[2])))
