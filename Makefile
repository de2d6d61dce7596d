# Two commands on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: run test app accuracy bench clean

$(BIN)/simplan: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# dev + executor extras; torch pinned first so the extra never pulls a CUDA build
$(VENV)/.dev: $(BIN)/simplan
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev,executor]"
	touch $@

run: $(BIN)/simplan
	$(BIN)/simplan plan --model gpt3-175b --hardware a100-sxm-80gb --gpus 1024 --global-batch 1536

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q tests

app: $(BIN)/simplan
	$(BIN)/streamlit run app.py

accuracy: $(BIN)/simplan
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/accuracy_published.py

bench: $(BIN)/simplan
	$(BIN)/python benchmarks/engine_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
