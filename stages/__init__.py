"""The stage registry: every stage, in pipeline order. A new stage is one file in this folder and one line here;
the command line, --config files, the interactive prompt, the manifest, the dry run and the reports take their
stages and options from this list.

Other packages can add stages without changing this project: a Stage subclass named in the entry-point group
"audio_processing.stages" joins the list after the stage its `after` attribute names (at the end without one).
"""

from importlib.metadata import entry_points

from stages.base import FileContext, Output, Part, Stage
from stages.denoise import Denoise
from stages.diarize import Diarize
from stages.split import Split
from stages.transcribe import Transcribe
from stages.utterances import Utterances
from stages.vad import VoiceActivity

BUILT_IN: tuple[type[Stage], ...] = (
    Split,
    Denoise,
    VoiceActivity,
    Diarize,
    Transcribe,
    Utterances,
)
PLUGIN_GROUP = "audio_processing.stages"


def _in_order() -> list[type[Stage]]:
    ordered = list(BUILT_IN)
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda entry: entry.name):
        stage = entry.load()
        names = [known.name for known in ordered]
        after = getattr(stage, "after", None)
        ordered.insert(names.index(after) + 1 if after in names else len(ordered), stage)
    return ordered


STAGES: dict[str, type[Stage]] = {stage.name: stage for stage in _in_order()}
STAGE_ORDER = tuple(STAGES)
DEFAULT_STEPS = tuple(name for name, stage in STAGES.items() if stage.by_default)
STAGE_OF_OPTION = {option.name: stage for stage in STAGES.values() for option in stage.options}
MANIFEST_FIELDS = tuple(dict.fromkeys(field for stage in STAGES.values() for field in stage.manifest_fields))


def build_stages(steps, config, models) -> list[Stage]:
    """The requested stages, in pipeline order whatever order they were asked in."""
    return [STAGES[name](config, models) for name in STAGE_ORDER if name in steps]


__all__ = ["FileContext", "Output", "Part", "Stage", "STAGES", "STAGE_ORDER", "DEFAULT_STEPS", "MANIFEST_FIELDS", "STAGE_OF_OPTION", "build_stages"]
