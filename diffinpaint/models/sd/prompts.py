"""Prompt sets: the text a diffusion model is told for each image, kept as data in prompts/*.toml.

A prompt set is one small TOML file:

    description = "..."                    # optional, for humans
    prompt = "Real image of a {label}, no text"
    negative_prompt = "text, watermark"    # optional, default ""

`{label}` (the only placeholder) is replaced by the image's label: the dataset's first subfolder under
images/. The sets shipped with the package live in the top-level prompts/ folder, installed as the package
`diffinpaint.prompts` (setup.py's package_dir), so `--prompt-set natural` works from a wheel too.
`--prompt-set` takes either such a name or a path to a .toml file.
"""
from __future__ import annotations

import string
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Sequence
from ...util.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the backport
    import tomli as tomllib

PACKAGE = "diffinpaint.prompts"
_KEYS = {"description", "prompt", "negative_prompt"}
_PLACEHOLDERS = {"label"}


@dataclass(frozen=True)
class PromptSet:
    name: str  # "natural", or the file's stem for a path
    source: str  # where it was read from (package resource or file path), for config.toml and errors
    prompt: str
    negative_prompt: str = ""
    description: str = ""

    @property
    def uses_label(self) -> bool:
        return "label" in _placeholders(self.prompt) | _placeholders(self.negative_prompt)

    def for_label(self, label: str | None) -> tuple[str, str]:
        """(prompt, negative_prompt) for one image."""
        if self.uses_label and not label:
            raise UserError(f"prompt set {self.source} uses {{label}} but an image has no label")
        return (self.prompt.replace("{label}", label or ""), self.negative_prompt.replace("{label}", label or ""))

    def check_labels(self, labels: Sequence[str | None]) -> None:
        """Refuse a dataset whose images cannot fill {label}, before any work starts."""
        if not self.uses_label:
            return
        missing = sum(1 for label in labels if not label)
        if missing:
            raise UserError(
                f"prompt set {self.source} uses {{label}}, but {missing} of {len(labels)} images have no label; "
                "put them in subfolders (DATA/images/<label>/...) or use --prompt-set natural"
            )

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "source": self.source, "prompt": self.prompt,
                "negative_prompt": self.negative_prompt}


def _placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def available_prompt_sets() -> list[str]:
    return sorted(p.name[: -len(".toml")] for p in files(PACKAGE).iterdir() if p.name.endswith(".toml"))


def load_prompt_set(name_or_path: str | Path) -> PromptSet:
    """Load a prompt set by name (shipped with the package) or by path to a .toml file.

    Raises ValueError with one line naming the file for a missing file, bad TOML, unknown keys, a missing or
    non-string prompt, or a placeholder other than {label}.
    """
    text_arg = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or text_arg.endswith(".toml") or "/" in text_arg or "\\" in text_arg
    if looks_like_path:
        path = Path(text_arg).expanduser()
        if not path.is_file():
            raise UserError(f"prompt set file {path} not found; pass an existing .toml file or one of: "
                             f"{', '.join(available_prompt_sets())}")
        name, source, raw = path.stem, str(path), path.read_bytes()
    else:
        resource = files(PACKAGE) / f"{text_arg}.toml"
        if not resource.is_file():
            raise UserError(f"unknown prompt set {text_arg!r}; choose one of {', '.join(available_prompt_sets())} "
                             "or pass a path to a .toml file")
        name, source, raw = text_arg, f"{PACKAGE}/{text_arg}.toml", resource.read_bytes()

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"prompt set {source} is not valid TOML: {str(e).splitlines()[0]}") from None
    unknown = set(data) - _KEYS
    if unknown:
        raise UserError(f"prompt set {source} has unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    if not isinstance(data.get("prompt"), str):
        raise UserError(f"prompt set {source} needs a string `prompt = \"...\"` (may be empty)")
    for key in ("negative_prompt", "description"):
        if not isinstance(data.get(key, ""), str):
            raise UserError(f"prompt set {source}: `{key}` must be a string")
    for key in ("prompt", "negative_prompt"):
        try:
            bad = _placeholders(data.get(key, "")) - _PLACEHOLDERS
        except ValueError as e:  # unbalanced braces
            raise UserError(f"prompt set {source}: `{key}` has a malformed placeholder ({e})") from None
        if bad:
            raise UserError(f"prompt set {source}: `{key}` uses unknown placeholder(s) "
                             f"{', '.join('{' + b + '}' for b in sorted(bad))}; only {{label}} is supported")
    return PromptSet(name=name, source=source, prompt=data["prompt"],
                     negative_prompt=data.get("negative_prompt", ""), description=data.get("description", ""))
