"""DNSMOS P.835 speech quality scores (SIG, BAK, OVRL) with ONNX Runtime.

The model is Microsoft's `sig_bak_ovr.onnx` from the `speechmos` wheel (loaders/model_store.py puts it in the
store). `score` gives the same numbers as `speechmos.dnsmos.run(audio, 16000)` (its non-personalized scores)
without speechmos or librosa at run time.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SECONDS = 9.01

# Microsoft's calibration of the raw outputs to MOS (non-personalized model).
_P_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
_P_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
_P_OVR = np.poly1d([-0.06766283, 1.11546468, 0.04602535])


class DNSMOS:
    def __init__(self, model_path: str, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One thread per window, windows side by side: the model's small layers keep a second intra-op thread
        # idle (no faster on two), while two windows at once take about half the time (measured).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.threads = threads
        self._pool = None

    def windows(self, audio: np.ndarray) -> list[np.ndarray]:
        """The 9.01 s windows speechmos scores, at 1 s hops."""
        length = int(WINDOW_SECONDS * SAMPLE_RATE)
        while len(audio) < length:  # short clips are repeated, doubling each time, as speechmos does
            audio = np.append(audio, audio)
        hops = int(np.floor(len(audio) / SAMPLE_RATE) - WINDOW_SECONDS) + 1
        windows = []
        for hop in range(hops):
            # The end is computed in floating point as speechmos does: for hops 7-23 it truncates one sample
            # short, and speechmos skips those windows; so must we to give its numbers.
            window = audio[hop * SAMPLE_RATE:int((hop + WINDOW_SECONDS) * SAMPLE_RATE)]
            if len(window) == length:
                windows.append(window)
        return windows

    def score(self, audio16k: np.ndarray) -> tuple[float, float, float]:
        """(SIG, BAK, OVRL) of a mono 16 kHz clip, each the mean over its windows."""
        audio = np.clip(np.asarray(audio16k, dtype=np.float32).reshape(-1), -1.0, 1.0)  # speechmos would raise
        if audio.size == 0:
            raise ValueError("DNSMOS needs at least one sample")
        windows = self.windows(audio)
        if self.threads > 1 and len(windows) > 1:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dnsmos")
            raw = np.array(list(self._pool.map(self._raw, windows)))
        else:
            raw = np.array([self._raw(window) for window in windows])
        sig, bak, ovr = raw.T
        return float(np.mean(_P_SIG(sig))), float(np.mean(_P_BAK(bak))), float(np.mean(_P_OVR(ovr)))

    def _raw(self, window: np.ndarray) -> np.ndarray:
        """The model's uncalibrated (sig, bak, ovr) for one window (ONNX Runtime lets threads share a session)."""
        return self.session.run(None, {self.input_name: window[np.newaxis]})[0][0]
