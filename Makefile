# Two commands do all the set-up: `make demo` and `make test` (both build .venv if needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# CUDA pairing, used only where `nvidia-smi` works (untested here: these machines have no GPU).
CUDA_INDEX ?= https://download.pytorch.org/whl/cu128
TORCH_VERSION := 2.13.0
FBGEMM_VERSION := 1.8.0
TORCHREC_VERSION := 1.8.0
RECBOLE_VERSION := 1.2.1

.PHONY: .venv demo test clean

.venv: $(STAMP)

$(STAMP): requirements.txt setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=23"
	@if nvidia-smi >/dev/null 2>&1; then \
		echo "GPU found: installing CUDA torch $(TORCH_VERSION) + fbgemm-gpu $(FBGEMM_VERSION) from $(CUDA_INDEX)"; \
		$(PIP) install -q torch==$(TORCH_VERSION) fbgemm-gpu==$(FBGEMM_VERSION) --index-url $(CUDA_INDEX) --extra-index-url https://pypi.org/simple; \
	else \
		echo "no GPU: installing CPU torch $(TORCH_VERSION) + fbgemm-gpu-cpu $(FBGEMM_VERSION)"; \
		$(PIP) install -q torch==$(TORCH_VERSION) fbgemm-gpu-cpu==$(FBGEMM_VERSION); \
	fi
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps torchrec==$(TORCHREC_VERSION) recbole==$(RECBOLE_VERSION)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, torchrec, fbgemm_gpu, recbole_mtl; print('stack ok: torch', torch.__version__)"
	touch $(STAMP)

demo: .venv
	$(PY) demo.py

test: .venv
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) log log_tensorboard saved runs/demo
