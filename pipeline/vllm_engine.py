"""Generation through vLLM (`pool.backend: vllm`): the run's `Batch`es of one checkpoint as one
Ray Data dataset through `ray.data.llm`'s vLLM engine processor, with tensor parallelism from
`pool.tensor_parallel`. The answer to a batch is what the Hugging Face path
(`generator_pool.Generator.run`) gives: (text without special tokens, ended with EOS) per prompt.

    batches --requests--> rows {tokenized_prompt, sampling_params, batch, index}
            --ray.data.llm vLLM processor (concurrency engines x tensor_parallel GPUs)-->
            rows {generated_text, generated_tokens} --answers--> per batch, in prompt order

Prompts are rendered and tokenized here, with the checkpoint's own tokenizer and no special
tokens added, exactly as the Hugging Face path does, so both engines see the same token ids.
Greedy decoding is comparable across engines (the same tables up to kernel rounding); sampled
decoding is seeded per prompt (seed, prompt id), so it does not depend on batching, but it is
not the Hugging Face path's random stream.

Needs the `gpu` extra (`ray[llm]`, which brings vLLM) and GPUs; `preflight` says so in one line
where either is missing."""
from __future__ import annotations

from pipeline.data.chat import render_prompts

SEED_STRIDE = 1_000_003  # the Hugging Face path's per-batch seed: seed * SEED_STRIDE + first prompt id


def sampling_params(b, position: int, eos_id: int) -> dict:
    """vLLM's SamplingParams for prompt `position` of batch `b`, as the Hugging Face path decodes:
    greedy, or sampled with temperature and no top-k / top-p cut; stop at EOS or the budget."""
    params = {"max_tokens": b.max_new_tokens, "stop_token_ids": [eos_id], "skip_special_tokens": True}
    if b.mode == "sampled":
        return {**params, "temperature": b.temperature, "top_p": 1.0,
                "seed": b.seed * SEED_STRIDE + b.first_id + position}
    return {**params, "temperature": 0.0}


def requests(batches: list, tokenizer) -> list[dict]:
    """One row per prompt of `batches` (all of one checkpoint): its token ids, its sampling
    parameters and where its answer goes."""
    rows = []
    for i, b in enumerate(batches):
        texts = render_prompts(list(b.prompts), tokenizer)
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for j, (text, tokens) in enumerate(zip(texts, ids)):
            rows.append({"batch": i, "index": j, "prompt": text, "tokenized_prompt": list(tokens),
                         "sampling_params": sampling_params(b, j, tokenizer.eos_token_id)})
    return rows


def answers(rows: list[dict], batches: list, eos_id: int) -> list[list[tuple[str, bool]]]:
    """The processor's output rows back in batch and prompt order: (text, finished), where
    finished means the answer ended with EOS before the budget (False: cut off)."""
    out = [[None] * len(b.prompts) for b in batches]
    for r in rows:
        tokens = list(r["generated_tokens"])
        b = batches[r["batch"]]
        finished = len(tokens) < b.max_new_tokens or (bool(tokens) and tokens[-1] == eos_id)
        out[r["batch"]][r["index"]] = (r["generated_text"], finished)
    missing = [(i, j) for i, batch in enumerate(out) for j, a in enumerate(batch) if a is None]
    if missing:
        raise RuntimeError(f"vLLM returned no answer for {len(missing)} prompt(s), e.g. batch {missing[0][0]}")
    return out


def generate(batches: list, pool) -> list[list[tuple[str, bool]]]:
    """Every batch's answers: one vLLM processor per checkpoint (engines load it once)."""
    import ray.data
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from pipeline import progress
    from pipeline.room import making_room
    from pipeline.train.models import load_tokenizer
    out: list = [None] * len(batches)
    by_path: dict[str, list[int]] = {}
    for i, b in enumerate(batches):
        by_path.setdefault(b.path, []).append(i)
    for path, idx in by_path.items():
        part = [batches[i] for i in idx]
        trust = part[0].trust_remote_code
        tokenizer = load_tokenizer(path, trust)
        config = vLLMEngineProcessorConfig(
            model_source=path, batch_size=pool.batch_size, concurrency=pool.concurrency,
            chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,  # done here and by vLLM
            engine_kwargs={"tensor_parallel_size": pool.tensor_parallel, "trust_remote_code": trust,
                           "dtype": "bfloat16", "enable_prefix_caching": True, "seed": part[0].seed})
        processor = build_processor(config, postprocess=lambda row: {
            "batch": row["batch"], "index": row["index"], "generated_text": row["generated_text"],
            "generated_tokens": row["generated_tokens"]})
        # the engines need whole GPUs: idle generators and training groups give theirs back first
        with making_room("GPU", pool.tensor_parallel * pool.concurrency):
            rows = processor(ray.data.from_items(requests(part, tokenizer))).take_all()
        for i, a in zip(idx, answers(rows, part, tokenizer.eos_token_id)):
            out[i] = a
        progress.board().add.remote(part[0].node, sum(len(b.prompts) for b in part), part[0].total, "prompts")
    return out
