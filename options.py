"""An option of the run, declared once: the command line, --config files, --print_config, the interactive
prompt and the checks are all built from these declarations (the stages declare their own, see stages/)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    name: str  # the RunConfig field, the flag (--name) and the TOML key
    default: Any
    help: str  # what it does; "(default: ...)" is added from `default`
    parse: Callable[[str], Any] = str  # text (a flag's or a TOML value's) -> value; ValueError says why not
    choices: tuple = ()
    kind: str = "value"  # "value", "flag" (true when given) or "list" (one or more values)
    group: str = ""  # --help section; a stage's options go under the stage's name
    env: str | None = None  # environment variable that supplies it when not given
    secret: bool = False  # never printed, saved or logged
    question: str | None = None  # asked in interactive mode with this text
    ask_if: Callable[[Any], bool] | None = None  # ... only when this holds for the answers so far
    default_text: str | None = None  # how --help shows the default, when not the value itself

    def convert(self, text: str) -> Any:
        """One value from its text, checked against the choices."""
        value = self.parse(text)
        if self.choices and value not in self.choices:
            raise ValueError(f"invalid choice: {value!r} (choose from {', '.join(map(str, self.choices))})")
        return value

    def from_toml(self, value: Any) -> Any:
        """A --config file's value, checked as the same flag would be."""
        if self.kind == "flag":
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if self.kind == "list":
            if not isinstance(value, list):
                raise ValueError(f'must be a list, e.g. {_example_list(self)}')
            return tuple(self.convert(_scalar_text(item)) for item in value)
        return self.convert(_scalar_text(value))

    @property
    def help_text(self) -> str:
        if self.kind == "flag" or self.default is None and self.default_text is None:
            return self.help
        shown = self.default_text or (" ".join(map(str, self.default)) if isinstance(self.default, tuple)
                                      else f"{self.default:g}" if isinstance(self.default, float) else self.default)
        return f"{self.help} (default: {shown})"


def _scalar_text(value: Any) -> str:
    if isinstance(value, (bool, list, dict)):
        raise ValueError("must be a single number or string")
    return str(value)


def _example_list(option: Option) -> str:
    return "[" + ", ".join(f'"{choice}"' for choice in option.choices[:2]) + "]"


# ---- parsers: text -> value, or ValueError with the reason ----

def _number(kind: Callable[[str], Any], text: str):
    value = kind(text)
    if isinstance(value, float) and not math.isfinite(value):  # nan passes every comparison; inf is no setting
        raise ValueError(f"must be a finite number, got {text}")
    return value


def _at_least(kind: Callable[[str], Any], low, inclusive: bool, name: str) -> Callable[[str], Any]:
    def parse(text: str):
        value = _number(kind, text)
        if value < low or value == low and not inclusive:
            raise ValueError(f"must be {'at least' if inclusive else 'greater than'} {low}, got {text}")
        return value

    parse.__name__ = f"{name} {kind.__name__}"  # argparse names the type in its error messages
    return parse


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    return _at_least(kind, 0, inclusive=False, name="positive")


def non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    return _at_least(kind, 0, inclusive=True, name="non-negative")


def fraction(text: str) -> float:
    value = _number(float, text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be between 0 and 1, got {text}")
    return value


def path(text: str) -> Path:
    if not text.strip():
        raise ValueError("must not be empty")
    return Path(text).expanduser()
