"""Study files: named variants of registered models in one eval (`diffinpaint eval --config study.toml`).

    [[model]]
    name = "sd-natural"          # the row, the run folder (runs/<name>) and the report's name: unique
    model = "sd"                 # a registered model
    prompt_set = "natural"       # any of that model's options, by option name (`diffinpaint run --help`)

    [[model]]
    name = "p2p-instance"
    model = "pix2pix"
    checkpoint = "ckpt/p2p"      # trained models: a training folder (or pass --pix2pix-checkpoint)
    pix2pix_norm = "instance"

The keys a table accepts come from the model's one option declaration (util/options.py): an unknown key or a bad
value is refused before any work, naming the file, the table and the key. Options typed on the command line
apply to every variant of their model that does not set them itself (e.g. `--sd-model` for all sd variants).
A study file is a path, or the name of one shipped with the package (prompts/studies/NAME.toml).
"""
from __future__ import annotations

import re
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..models import given_options, model_class, settings_for
from ..util.errors import UserError
from .evaluate import Variant

SHIPPED = "diffinpaint.prompts"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a safe folder name under runs/


def study_path(ref: str) -> tuple[str, str]:
    """(source for messages, TOML text) of a study file given as a path or a shipped name."""
    path = Path(ref)
    if path.is_file():
        try:
            return str(path), path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"--config {path}: not a UTF-8 text file; pass a study .toml") from None
    shipped = files(SHIPPED).joinpath("studies", f"{ref}.toml")
    if not path.suffix and shipped.is_file():
        return f"studies/{ref}.toml (shipped)", shipped.read_text(encoding="utf-8")
    names = sorted(p.name.removesuffix(".toml") for p in files(SHIPPED).joinpath("studies").iterdir()
                   if p.name.endswith(".toml"))
    raise UserError(f"--config {ref}: no such file; pass a study .toml or a shipped study ({', '.join(names)})")


def load_study(ref: str, namespace: Any = None) -> list[Variant]:
    """The variants of study file `ref`. `namespace`: the parsed command line (or a mapping of flag dests); its
    model options apply where a variant does not set them, and a flag of a model the study does not use is
    refused."""
    source, text = study_path(ref)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{source}: not valid TOML ({err})") from None
    extra = sorted(set(document) - {"model"})
    if extra:
        raise UserError(f"{source}: unknown top-level key {extra[0]!r}; a study file holds [[model]] tables only")
    tables = document.get("model")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UserError(f"{source}: no [[model]] tables; each names a variant: name = \"...\", model = \"...\"")
    models = list(dict.fromkeys(t["model"] for t in tables if isinstance(t.get("model"), str)))  # file order
    for model in models:
        try:
            model_class(model)
        except UserError as err:  # unknown model: say where, then the registry
            raise UserError(f"{source} [[model]] model = {model!r}: {err}") from None
    typed = given_options(namespace, models) if namespace is not None else {}
    variants, seen = [], set()
    for index, table in enumerate(tables, start=1):
        where = f"{source} [[model]] #{index}"
        name, model = table.get("name"), table.get("model")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise UserError(f"{where}: name must be a short folder-safe string (letters, digits, . _ -), got "
                            f"{name!r}")
        where = f"{source} [[model]] {name!r}"
        if name in seen:
            raise UserError(f"{where}: the name is used twice; give each variant its own name")
        seen.add(name)
        if not isinstance(model, str):
            raise UserError(f"{where}: model must name a registered model, e.g. model = \"telea\"")
        options = {k: v for k, v in table.items() if k not in ("name", "model")}
        merged = {**typed.get(model, {}), **options}  # the table wins over the command line
        settings_for(model, merged, where=where)  # unknown keys and bad values refused now, naming table and key
        variants.append(Variant(name=name, model=model, options=merged))
    return variants
