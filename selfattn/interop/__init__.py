"""Other formats in and out: Hugging Face folders (config.json + safetensors)."""

from .hf import HF_LOADERS, load_hf, save_hf

__all__ = ["HF_LOADERS", "load_hf", "save_hf"]
