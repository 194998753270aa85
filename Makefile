# The README's two commands are `make demo` and `make test`; both set up .venv first.
.PHONY: setup test demo bench lock

setup:
	bash scripts/setup.sh

test: setup
	bash scripts/run.sh python -m pytest test

demo: setup
	bash scripts/run.sh python -m snapflow_ros demo

bench: setup
	bash scripts/run.sh python -m snapflow_ros bench --policy smolvla-tiny --num-steps 10 1 --json

lock:
	bash scripts/lock.sh
