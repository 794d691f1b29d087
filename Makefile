# The two set-up commands of the README. Both install .venv first if needed.
.PHONY: install smoke test

install:
	bash scripts/install.sh

# The whole pipeline on the embedded default (a local Ray cluster, local files), on the
# example data that ships in examples/data/: label with a tiny random teacher, then distil
# into a tiny random student, both built on the spot. The labels are noise: this shows the
# machinery, not quality. (`raydistill label|distill CONFIG --smoke` run the two halves.)
smoke: install
	.venv/bin/raydistill smoke examples/banking_support.yaml

# Two pytest processes side by side (see the script); `.venv/bin/python -m pytest tests` runs the same.
# tests/test_review.py also needs Label Studio, in a virtualenv of its own: its install starts first,
# in the background, and overlaps the project's install and the first tests (the test waits for it).
test:
	bash scripts/install_labelstudio.sh --background
	bash scripts/install.sh
	bash scripts/test.sh
