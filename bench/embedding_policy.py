"""The CAM++ embedding policy inside pyannote's offline pipeline, side by side: today's build against an earlier
revision's loaders/speaker_embedding.py (by default the last that padded each batch of local speakers to its
longest row), same models, same step (0.2), one thread.

    .venv/bin/python bench/embedding_policy.py [--before 3ba2ee9] [--minutes 3.5]

Each policy runs in a process of its own (CPU time and peak RSS of that process) on the real recordings with
RTTM and one generated 4-speaker conversation (bench/conversations.py); DER without collar.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RUN = r"""
import json, resource, sys, time, importlib.util
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location("loaders.speaker_embedding", {module!r})
module = importlib.util.module_from_spec(spec); sys.modules["loaders.speaker_embedding"] = module
spec.loader.exec_module(module)
from loaders.model_store import default_models_dir
import soundfile as sf
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate
store = default_models_dir()
pipeline = module.build_offline_pipeline(store / "pyannote/segmentation-3.0/pytorch_model.bin",
                                         store / "speaker/campplus_cn_en_common.pt")
results = []
for audio, rttm in {files!r}:
    samples, rate = sf.read(audio, dtype="float32", always_2d=True)
    waveform = torch.from_numpy(samples.mean(axis=1))[None]
    begun = time.process_time()
    output = pipeline({{"waveform": waveform, "sample_rate": rate}})
    seconds = time.process_time() - begun
    hypothesis = getattr(output, "speaker_diarization", output)
    reference = Annotation()
    for line in open(rttm):
        f = line.split()
        reference[Segment(float(f[3]), float(f[3]) + float(f[4]))] = f[7]
    der = DiarizationErrorRate(collar=0.0, skip_overlap=False)(reference, hypothesis)
    results.append((audio, seconds, der))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"results": results, "peak_mb": peak}}))
"""


def run(module: Path, files: list[tuple[str, str]]) -> dict:
    script = RUN.format(root=str(ROOT), module=str(module), files=files)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="3ba2ee9", help="git revision of the policy to compare with (default: the"
                        " last one that padded each batch of local speakers)")
    parser.add_argument("--minutes", type=float, default=3.5, help="length of the generated conversation")
    args = parser.parse_args()
    from conversations import make_conversation
    from sample_data import companion, resolve as data

    work = Path(tempfile.mkdtemp(prefix="embedding-policy-"))
    conversation = make_conversation(work, 4, args.minutes, 2)
    files = [(str(data(name)), str(companion(data(name), ".rttm")))
             for name in ("pyannote_sample/sample.flac", "falcon/test.flac")]
    files.append((str(conversation.audio), str(conversation.rttm)))
    before = work / "speaker_embedding_before.py"
    before.write_text(subprocess.run(["git", "show", f"{args.before}:loaders/speaker_embedding.py"], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout)
    measured = {"before": run(before, files), "now": run(ROOT / "loaders" / "speaker_embedding.py", files)}
    print(f"| recording | CPU s, {args.before} / now | ratio | DER %, {args.before} / now |")
    print("|---|---|---|---|")
    for (audio, old_s, old_der), (_, new_s, new_der) in zip(measured["before"]["results"],
                                                           measured["now"]["results"]):
        print(f"| {Path(audio).name} | {old_s:.1f} / {new_s:.1f} | {new_s / old_s:.2f} | "
              f"{100 * old_der:.2f} / {100 * new_der:.2f} |")
    total = [sum(r[1] for r in measured[k]["results"]) for k in ("before", "now")]
    print(f"| all | {total[0]:.1f} / {total[1]:.1f} | {total[1] / total[0]:.2f} | |")
    print(f"\npeak RSS of the process, MB: {measured['before']['peak_mb']:.0f} / {measured['now']['peak_mb']:.0f} "
          f"({measured['now']['peak_mb'] / measured['before']['peak_mb']:.2f})")


if __name__ == "__main__":
    main()
