# make        builds the standalone programs (build/bin/, linked into the repo root as ./flash_attention ...)
# make test   runs ctest (C++ unit tests + every program's --check on the CPU) and then pytest
# make clean  removes build outputs only
#
# The programs come from the same CMake tree that `pip install --no-build-isolation .` builds
# (build/), so kernels compile once. Knobs: CUATTN_CUDA_ARCHS="90a" CUATTN_HEAD_DIMS="128" for a
# quick development build.

PROGRAMS := flash_attention sliding_window_attention paged_attention mla_attention \
            persistent_decode attention_variants
BUILD    ?= build
CMAKE    ?= cmake
PYTHON   ?= python3
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
CUATTN_CUDA_ARCHS ?= 80;90a
CUATTN_HEAD_DIMS  ?= 64;96;128;192;256

.PHONY: all programs configure test pytest ctest clean

all: programs

# Without nanobind (no `pip install -r requirements.txt` yet) the tree is configured without the
# Python module; pip's build of the package later turns it on in the same tree.
PYMODULE := $(shell $(PYTHON) -c "import nanobind" >/dev/null 2>&1 && echo ON || echo OFF)

$(BUILD)/CMakeCache.txt:
	$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=$$(command -v $(PYTHON)) \
	  -DCUATTN_BUILD_PYTHON=$(PYMODULE) \
	  "-DCUATTN_CUDA_ARCHS=$(CUATTN_CUDA_ARCHS)" "-DCUATTN_HEAD_DIMS=$(CUATTN_HEAD_DIMS)"

configure: $(BUILD)/CMakeCache.txt

programs: $(BUILD)/CMakeCache.txt
	$(CMAKE) --build $(BUILD) -j $(JOBS)
	@for p in $(PROGRAMS); do ln -sf $(BUILD)/bin/$$p $$p; done

ctest: programs
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

pytest:
	$(PYTHON) -m pytest -q tests/python

test: ctest pytest

clean:
	rm -rf $(BUILD)
	rm -f $(PROGRAMS)
