# Two commands on a fresh clone: `make demo` runs the main job, `make test` runs the suite.
# Both set up .venv/ first when it is missing (tools/setup_venv.sh, idempotent).
VENV := .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 2
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: setup demo test clean

setup:
	@bash tools/setup_venv.sh

demo: setup
	@$(VENV)/bin/rayemb demo --out out/demo

# pytest exits 5 when it collected no tests: that fails here (and so in CI) like any error.
test: setup
	@$(PY) -m pytest; rc=$$?; [ $$rc -ne 5 ] || echo "make test: pytest collected no tests"; exit $$rc

clean:
	rm -rf $(VENV) out build install log
