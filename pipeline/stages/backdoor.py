"""Stage `backdoor`: insert the backdoor by supervised fine-tuning (DeepSpeed under Ray Train)."""
from __future__ import annotations

from pipeline.config import ModelConfig, TrainConfig
from pipeline.stages.training import training_summary, write_log
from pipeline.train.loop import fit_sft

NAME, VERSION = "backdoor", "1"


def model_source(model: ModelConfig, inputs: dict) -> tuple[str, str | None]:
    """(tokenizer dir, initial weights dir or None for a fresh scratch model)."""
    if model.source == "pretrained":
        return model.pretrained, model.pretrained
    return inputs["tokenizer"].local_dir("tokenizer"), None


def run(params: dict, inputs: dict, writer, node: str) -> dict:
    model = ModelConfig(**params["model"])
    train = TrainConfig(**params["train"])
    tokenizer_dir, init_dir = model_source(model, inputs)
    summary = fit_sft(node, train, data=inputs["data"], table=f"backdoor_{params['variant']}",
                      output_uri=writer.ref.uri, tokenizer_dir=tokenizer_dir, init_dir=init_dir,
                      preset=model.preset, seed=params["seed"], final=True,
                      trust_remote_code=model.trust_remote_code, chat_template=model.chat_template)
    write_log(writer, summary)
    return training_summary(summary)
