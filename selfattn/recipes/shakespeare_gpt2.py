"""The same task with the GPT-2 style of our GPT: learned positions, LayerNorm, GELU, biases."""

from ..lm import LMDataConfig, LMRunConfig, SampleConfig, run_lm_recipe
from ..models.gpt import GPTConfig
from ..train import TrainConfig

NAME = "shakespeare-gpt2"
DESCRIPTION = "char-level GPT-2-style model (learned positions, LayerNorm, GELU) on Shakespeare, 10 min"


def default_config() -> LMRunConfig:
    return LMRunConfig(
        recipe=NAME,
        model=GPTConfig(block_size=128, n_layer=4, n_head=4, n_embd=192, position="learned",
                        activation="gelu_tanh", norm="layernorm", bias=True, tie_embeddings=True),
        data=LMDataConfig(corpus="shakespeare", tokenizer="char"),
        train=TrainConfig(max_steps=0, batch_size=32, lr=2e-3, min_lr=1e-4, warmup_steps=100,
                          beta2=0.99, eval_every=250, eval_batches=40, checkpoint_every=500,
                          max_minutes=10.0),
        sample=SampleConfig(prompt="ROMEO:\n", max_new_tokens=600, temperature=0.8, top_p=0.95),
    )


def run(cfg: LMRunConfig, run_dir, resume: bool = False) -> dict:
    return run_lm_recipe(cfg, run_dir, resume=resume)
