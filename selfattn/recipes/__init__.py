"""Runnable recipes: a name, a one-line description, a default config and a runner.

Each recipe module defines ``NAME``, ``DESCRIPTION``, ``default_config()`` and
``run(config, run_dir, resume=False) -> dict``. They ship inside the package (not in a top-level
``recipes/`` folder) so that ``selfattn train NAME`` works from any directory after install.
"""

from __future__ import annotations

import importlib

from ..config import ConfigError

_MODULES = ("shakespeare_char", "shakespeare_gpt2", "imdb_sentiment", "imdb_minilm", "imdb_tfidf",
            "fashion_vit", "fashion_cnn", "mnist_vit", "bible_en_es")


def all_recipes() -> dict:
    mods = [importlib.import_module(f".{m}", __package__) for m in _MODULES]
    return {m.NAME: m for m in mods}


def get_recipe(name: str):
    recipes = all_recipes()
    if name not in recipes:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {sorted(recipes)} (`selfattn recipes` lists them)")
    return recipes[name]
