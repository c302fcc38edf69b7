"""The same task with a Llama-style model: RoPE, RMSNorm, SwiGLU, grouped-query attention."""

from ..lm import LMDataConfig, LMRunConfig, SampleConfig, run_lm_recipe
from ..models.gpt import GPTConfig
from ..train import TrainConfig

NAME = "shakespeare-llama"
DESCRIPTION = "char-level Llama-style model (RoPE, RMSNorm, SwiGLU, GQA) on Shakespeare"


def default_config() -> LMRunConfig:
    return LMRunConfig(
        recipe=NAME,
        model=GPTConfig(block_size=128, n_layer=4, n_head=6, n_kv_head=2, n_embd=192, position="rope",
                        activation="swiglu", norm="rmsnorm", bias=False, tie_embeddings=True),
        data=LMDataConfig(corpus="shakespeare", tokenizer="char"),
        train=TrainConfig(max_steps=0, batch_size=32, lr=2e-3, min_lr=1e-4, warmup_steps=200,
                          beta2=0.99, eval_every=500, eval_batches=40, checkpoint_every=1000,
                          max_minutes=10.0),
        sample=SampleConfig(prompt="ROMEO:\n", max_new_tokens=600, temperature=0.8, top_p=0.95),
    )


def run(cfg: LMRunConfig, run_dir, resume: bool = False) -> dict:
    return run_lm_recipe(cfg, run_dir, resume=resume)
