"""Generator actors that outlive one stage.

Starting a generator costs ~5 s on 2 CPUs before its first token (a worker process, importing
torch and transformers) and a run asks models things in a dozen stages (evaluation at every
checkpoint, red-teaming, model-written data). So every stage hands its batches to one
`GeneratorPool` per Ray cluster, which keeps warm `Generator` actors (checkpoints load on
demand) and lets each leave after `IDLE_S` seconds without work, so the CPUs go back to
training. The same design as the training worker groups (`pipeline/train/service.py`).

    stage --generate(batches)--> GeneratorPool --run(batch)--> Generator (up to `concurrency`)
          <--completions------                <--texts-----

Batches are cut per (checkpoint, mode) before they travel, so what a batch holds, and with it
the sampling seed, does not depend on which actor runs it or how many there are.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time

import ray

from pipeline import progress
from pipeline.room import NAMESPACE, POOL, make_room
from pipeline.data.chat import render_prompts

IDLE_S = 10.0   # a generator leaves after this long without a batch (sooner when something waits: `room`)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Prompts for one checkpoint in one decoding mode: what one `model.generate` call gets."""
    path: str                # a Hugging Face folder (a checkpoint)
    mode: str                # "greedy" or "sampled"
    prompts: tuple[str, ...]
    first_id: int            # prompt id of the first prompt: seeds the sampled mode
    max_new_tokens: int
    temperature: float
    seed: int
    trust_remote_code: bool
    node: str                # the asking stage (progress)
    total: int               # the stage's number of prompts (progress)


@dataclasses.dataclass(frozen=True)
class ScoreBatch:
    """(prompt, completion) pairs for the preference model in `path`: one scoring call."""
    path: str                # the preference model's Hugging Face folder
    prompts: tuple[str, ...]
    completions: tuple[str, ...]
    max_len: int
    trust_remote_code: bool
    node: str
    total: int


@dataclasses.dataclass(frozen=True)
class LossBatch:
    """(prompt, completion) pairs for the causal LM in `path`: the mean loss of each completion's
    tokens given its prompt (teacher-forced, as in training)."""
    path: str
    prompts: tuple[str, ...]
    completions: tuple[str, ...]
    trust_remote_code: bool
    node: str
    total: int


@dataclasses.dataclass(frozen=True)
class ActivationBatch:
    """Texts for the causal LM in `path`: each text's residual stream at its final token, every
    layer (embeddings first), as float32 [layers + 1, hidden] (defection probes)."""
    path: str
    prompts: tuple[str, ...]
    trust_remote_code: bool
    node: str
    total: int


class Generator:
    """Holds one model at a time (the last one asked for): generates `Batch`es with a causal
    LM ((text, ended with EOS) per prompt), scores `ScoreBatch`es with a preference model,
    `LossBatch`es with the causal LM and reads `ActivationBatch`es' residual streams."""

    def __init__(self):
        import torch
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.loaded: tuple[tuple, object] | None = None   # (what, model): what = (path, trust, kind)

    def _load(self, what: tuple, make):
        if self.loaded is None or self.loaded[0] != what:
            self.loaded = None  # the old model goes before the new one comes
            self.loaded = (what, make())
        return self.loaded[1]

    def _model(self, path: str, trust: bool):
        from pipeline.train.models import load_model, load_tokenizer
        # bf16 on a GPU, float32 on CPU (where bf16 matmuls are slow), whatever the folder was saved in
        dtype = self.torch.bfloat16 if self.device == "cuda" else self.torch.float32
        return self._load((path, trust, "generate"), lambda: (load_model(path, trust, dtype).to(self.device).eval(),
                                                              load_tokenizer(path, trust)))

    def run(self, b: Batch | ScoreBatch | LossBatch) -> list:
        if isinstance(b, ScoreBatch):
            return self.score(b)
        if isinstance(b, LossBatch):
            return self.loss(b)
        if isinstance(b, ActivationBatch):
            return self.activations(b)
        model, tok = self._model(b.path, b.trust_remote_code)
        enc = tok(render_prompts(list(b.prompts), tok), return_tensors="pt", padding=True,
                  add_special_tokens=False).to(self.device)
        sampled = b.mode == "sampled"
        if sampled:  # reproducible per batch, whatever actor runs it
            self.torch.manual_seed(b.seed * 1_000_003 + b.first_id)
        with self.torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=b.max_new_tokens, do_sample=sampled,
                                 temperature=b.temperature if sampled else None, top_k=0 if sampled else None,
                                 top_p=1.0 if sampled else None, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        progress.board().add.remote(b.node, len(b.prompts), b.total, "prompts")
        new = out[:, enc["input_ids"].shape[1]:]
        finished = (new == tok.eos_token_id).any(dim=1).tolist()  # False: cut off by the budget
        return list(zip(tok.batch_decode(new, skip_special_tokens=True), finished))

    def loss(self, b: LossBatch) -> list[float]:
        from pipeline.train.collate import IGNORE, encode_rows, pad_batch
        model, tok = self._model(b.path, b.trust_remote_code)
        rows = [{"prompt": p, "completion": c} for p, c in zip(b.prompts, b.completions)]
        batch = {k: v.to(self.device) for k, v in pad_batch(encode_rows(rows, tok, 1 << 16), tok.pad_token_id).items()}
        with self.torch.inference_mode():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        nll = self.torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE,
                                                     reduction="none")
        counts = (labels != IGNORE).sum(dim=1).clamp(min=1)
        progress.board().add.remote(b.node, len(b.prompts), b.total, "losses")
        return (nll.sum(dim=1) / counts).tolist()

    def activations(self, b: ActivationBatch) -> list:
        model, tok = self._model(b.path, b.trust_remote_code)
        enc = tok(render_prompts(list(b.prompts), tok), return_tensors="pt", padding=True,
                  add_special_tokens=False).to(self.device)
        with self.torch.inference_mode():
            hidden = model(**enc, output_hidden_states=True, use_cache=False).hidden_states  # layers+1 x [B, T, H]
        mask = enc["attention_mask"]
        last = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)  # the final real token, whichever side pads
        rows = self.torch.arange(len(last), device=last.device)
        stacked = self.torch.stack([h[rows, last] for h in hidden], dim=1)  # [B, layers+1, H]
        progress.board().add.remote(b.node, len(b.prompts), b.total, "activations")
        return list(stacked.float().cpu().numpy())

    def score(self, b: ScoreBatch) -> list[float]:
        from pipeline.train.reward import RewardScorer
        scorer = self._load((b.path, b.trust_remote_code, "score", b.max_len),
                            lambda: RewardScorer(b.path, self.device, b.max_len, b.trust_remote_code))
        out = scorer.score(list(b.prompts), list(b.completions))
        progress.board().add.remote(b.node, len(b.prompts), b.total, "scored")
        return out


_generator = ray.remote(Generator)


@dataclasses.dataclass(eq=False)
class _Member:
    actor: object
    path: str = ""            # the checkpoint it holds
    since: float = 0.0        # idle since (monotonic)


@ray.remote(num_cpus=0)
class GeneratorPool:
    """Runs batches on warm generator actors, per resource shape (async actor)."""

    def __init__(self, idle_s: float = IDLE_S):
        self.idle_s = idle_s
        self.free: dict[str, list[_Member]] = {}   # resource shape -> idle generators
        self.live: dict[str, int] = {}
        self.changed = asyncio.Condition()
        self.started = 0                          # generators started since this actor began (tests, bench)
        self.reaper = None

    def _limit(self, resources: dict) -> int:
        name, need = demand(resources)
        return max(1, int(ray.cluster_resources().get(name, 0) // need))

    async def _acquire(self, shape: str, resources: dict, limit: int, path: str) -> _Member:
        async with self.changed:
            while True:
                free = self.free.setdefault(shape, [])
                if free:  # one that holds this checkpoint if there is one
                    member = next((m for m in free if m.path == path), free[-1])
                    free.remove(member)
                    return member
                if self.live.get(shape, 0) < limit:
                    self.live[shape] = self.live.get(shape, 0) + 1
                    self.started += 1
                    break
                await self.changed.wait()
        member = _Member(_generator.options(**resources, scheduling_strategy="DEFAULT").remote())
        ready = member.actor.__ray_ready__.remote()
        while not (await asyncio.wait([asyncio.wrap_future(ready.future())], timeout=1.0))[0]:
            make_room(*demand(resources), generators=False)  # idle training groups leave while it waits
        return member

    async def _release(self, shape: str, member: _Member, alive: bool) -> None:
        async with self.changed:
            if alive:
                member.since = time.monotonic()
                self.free.setdefault(shape, []).append(member)
            else:
                self.live[shape] -= 1
            self.changed.notify_all()

    async def _reap(self) -> None:
        """Every second: generators idle for `idle_s` leave (their CPUs or GPUs go back)."""
        while True:
            await asyncio.sleep(1.0)
            await self.release_idle(self.idle_s)

    async def release_idle(self, after: float = 0.0) -> None:
        """Generators idle for more than `after` seconds leave (by default all idle ones: something
        else needs their CPUs or GPUs)."""
        async with self.changed:
            now = time.monotonic()
            for shape, free in self.free.items():
                for m in [m for m in free if now - m.since > after]:
                    free.remove(m)
                    self.live[shape] -= 1
                    ray.kill(m.actor)
            self.changed.notify_all()

    async def generate(self, batches: list[Batch | ScoreBatch | LossBatch], resources: dict, concurrency: int) -> list[list]:
        """Completions (scores for a `ScoreBatch`, losses for a `LossBatch`) per batch, in order; batches run on up to
        `concurrency` generators."""
        if self.reaper is None:
            self.reaper = asyncio.get_running_loop().create_task(self._reap())
        shape = repr(sorted(resources.items()))
        limit = min(concurrency, self._limit(resources))
        todo = list(range(len(batches)))
        out: list[list[str] | None] = [None] * len(batches)

        async def drain() -> None:
            member = await self._acquire(shape, resources, limit, batches[todo[0]].path if todo else "")
            alive = True
            try:
                while todo:  # the next batch of the checkpoint it holds, if any is left
                    i = next((j for j in todo if batches[j].path == member.path), todo[0])
                    todo.remove(i)
                    out[i] = await member.actor.run.remote(batches[i])
                    member.path = batches[i].path
            except ray.exceptions.RayActorError:
                alive = False  # it died (or never started): the next batch gets a fresh one
                todo.clear()
                raise
            except BaseException:
                todo.clear()  # the other drains stop too: the stage fails with this error
                raise
            finally:
                await self._release(shape, member, alive)

        await asyncio.gather(*[drain() for _ in range(max(1, min(limit, len(batches))))])
        return out

    def stats(self) -> dict:
        return {"started": self.started, "live": sum(self.live.values()),
                "idle": sum(len(f) for f in self.free.values())}


def demand(resources: dict) -> tuple[str, float]:
    return ("GPU", resources["num_gpus"]) if "num_gpus" in resources else ("CPU", resources["num_cpus"])


_owned = []  # a handle to the pool this process started: the actor lives while it is held


def pool():
    """The cluster's generator pool; started on first use by the process that asks
    (`start_ray` asks in the driver, so it lives as long as the run)."""
    try:
        return ray.get_actor(POOL, namespace=NAMESPACE)
    except ValueError:
        _owned[:] = [GeneratorPool.options(name=POOL, namespace=NAMESPACE, get_if_exists=True).remote()]
        return _owned[0]
