# The two set-up commands of the README. Both install .venv first if needed.
.PHONY: install smoke test

install:
	bash scripts/install.sh

# The whole pipeline on the embedded default (a local Ray cluster, local files):
# label with a tiny random teacher, then distil into a tiny random student, both
# built on the spot. The labels are noise: this shows the machinery, not quality.
smoke: install
	.venv/bin/raydistill label examples/financial_sentiment.yaml --smoke
	.venv/bin/raydistill distill examples/financial_sentiment.yaml --smoke

# Two pytest processes side by side (see the script); `.venv/bin/python -m pytest tests` runs the same.
test: install
	bash scripts/test.sh
