# Set-up and everyday targets. `make test` bootstraps .venv with the pinned stack when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo lint fmt tpu-venv clean-venv

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=40 tests

demo: $(STAMP)
	$(PY) -m launch.demo --config=configs/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# libtpu in a separate environment: describes TPU slices for launch.aot_compile on a CPU machine.
tpu-venv: requirements.txt setup.py
	test -x .venv-tpu/bin/python || $(PYTHON) -m venv .venv-tpu
	.venv-tpu/bin/python -m pip install -q -r requirements.txt "jax[tpu]==0.10.2"
	.venv-tpu/bin/python -m pip install -q --no-deps -e .

clean-venv:
	rm -rf $(VENV)
