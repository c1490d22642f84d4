"""Recipe files: a YAML (or JSON) mapping of command-line arguments, as `training/recipes/*.yaml` hold them.

    model_name_or_path: openai/clip-vit-base-patch16     # one key per argument of run_slip.py
    per_device_train_batch_size: 128
    few_shot: [1, 5]                                     # a list gives several values
    ablation:                                            # optional: arguments of `slip-hf ablate` only
      table: batch_size
      batch_sizes: [128, 256, 512]

`run_slip.py recipe.yaml --flag value` reads the top-level keys and only checks the `ablation:` section;
`slip-hf ablate recipe.yaml` reads both. Every key is checked against the argument dataclasses before anything
runs: a key that none of them knows is one error line that names the key and the file (with the closest known
name), never a silently ignored setting.
"""

import dataclasses
import difflib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
ABLATION_SECTION = "ablation"
"""The recipe section that holds `slip-hf ablate`'s own arguments (table, seeds, batch sizes, ...)."""


def _field_names(types: Iterable[type]) -> set[str]:
    return {f.name for t in types for f in dataclasses.fields(t) if f.init}


@dataclasses.dataclass
class Recipe:
    """A parsed recipe file: its top-level `arguments` and its `ablation` section."""

    path: Path
    arguments: dict[str, Any]
    ablation: dict[str, Any]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recipe":
        """Read a recipe. Raises `FileNotFoundError` or a one-line `ValueError` naming the file."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe {path}: no such file.")
        try:
            values = yaml.safe_load(path.read_text()) or {}  # JSON is YAML
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"recipe {path}: not valid YAML{where} ({getattr(error, 'problem', error)}).") from None
        if not isinstance(values, dict):
            raise ValueError(f"recipe {path}: expected a mapping of argument names to values, got {type(values).__name__}.")
        ablation = values.pop(ABLATION_SECTION, None) or {}
        if not isinstance(ablation, dict):
            raise ValueError(f"recipe {path}: the '{ABLATION_SECTION}:' section must be a mapping, got {type(ablation).__name__}.")
        return cls(path, values, ablation)

    def flags(self, argument_types: Sequence[type], ablation_types: Sequence[type] = (), with_ablation: bool = False) -> list[str]:
        """The recipe as command-line flags for an `HfArgumentParser` over `argument_types` (plus `ablation_types`
        when `with_ablation`).

        Top-level keys must be fields of `argument_types` (with `with_ablation`, also of `ablation_types`, as older
        recipes had them); the keys of the `ablation:` section must be fields of `ablation_types`. The section
        becomes flags only `with_ablation` (`slip-hf ablate`); run_slip.py checks it and leaves it out.
        """
        known, ablation_known = _field_names(argument_types), _field_names(ablation_types)
        for key in self.arguments:
            if key in known or (with_ablation and key in ablation_known):
                continue
            if key in ablation_known:
                self._unknown(key, f"an argument of `slip-hf ablate`: put it under '{ABLATION_SECTION}:'")
            self._unknown(key, _suggestion(key, known))
        if ablation_types:
            for key in self.ablation:
                if key not in ablation_known:
                    self._unknown(f"{ABLATION_SECTION}.{key}", _suggestion(key, ablation_known))
        pairs = list(self.arguments.items()) + (list(self.ablation.items()) if with_ablation else [])
        flags: list[str] = []
        for key, value in pairs:
            if value is None:  # `key:` with no value keeps the argument's default
                continue
            flags.append(f"--{key}")
            if isinstance(value, list):
                flags.extend(_flag_value(v) for v in value)
            else:
                flags.append(_flag_value(value))
        return flags

    def _unknown(self, key: str, hint: str) -> None:
        raise ValueError(f"recipe {self.path}: unknown key '{key}' ({hint}).")


def _suggestion(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(str(key), sorted(known), n=1)
    return f"did you mean '{close[0]}'?" if close else "no argument has that name; --help lists them"


def _flag_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict) else str(value)


def is_recipe(argument: str) -> bool:
    """Whether a command line's first argument names a recipe file."""
    return argument.endswith(RECIPE_SUFFIXES)


__all__ = ["ABLATION_SECTION", "RECIPE_SUFFIXES", "Recipe", "is_recipe"]
