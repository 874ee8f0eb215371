# The README's two commands. Both run the idempotent set-up first.
.PHONY: run test bench

run:
	./scripts/setup.sh
	.venv/bin/python scripts/serve.py

test:
	./scripts/setup.sh --test
	.venv/bin/python -m pytest -raR --rerun-show-tracebacks

bench:
	./scripts/setup.sh
	.venv/bin/python bench/bench_loading.py
