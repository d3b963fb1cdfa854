# The two commands of the README. Each sets up .venv by itself (torch==2.13.0 first) and then runs.
.PHONY: setup demo test lint format bench-data bench-vlp bench-flare bench-feddra bench-noise clean

setup:
	bash scripts/setup.sh test

demo: setup
	HF_HUB_OFFLINE=1 .venv/bin/flare-vlp demo

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench-data: setup
	HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_data.py

bench-vlp: setup
	HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_vlp.py

bench-flare: setup
	HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_flare_overhead.py

bench-feddra: setup
	HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_feddra.py

bench-noise: setup  # test-set bootstrap of bench-feddra's finished runs (run that first)
	HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_metric_noise.py

clean:
	rm -rf .venv runs .pytest_cache .ruff_cache
