"""The four stages, always run in this order: split, denoise, vad, diar."""

from stages.base import FileContext, Part, Stage
from stages.denoise import Denoise
from stages.diarize import Diarize
from stages.split import Split
from stages.vad import VoiceActivity

STAGES: dict[str, type[Stage]] = {stage.name: stage for stage in (Split, Denoise, VoiceActivity, Diarize)}
STAGE_ORDER = tuple(STAGES)


def build_stages(steps, config, models) -> list[Stage]:
    """The requested stages, in pipeline order whatever order they were asked in."""
    return [STAGES[name](config, models) for name in STAGE_ORDER if name in steps]


__all__ = ["FileContext", "Part", "Stage", "STAGES", "STAGE_ORDER", "build_stages"]
