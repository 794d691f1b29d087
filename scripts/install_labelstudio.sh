#!/usr/bin/env bash
# Create .venv-labelstudio: Label Studio and its SDK for tests/test_review.py (a round trip through a
# real Label Studio server) and scripts/review_screenshot.py. A virtualenv of its own: Label Studio's
# pins would change ours (numpy 2.3 -> 2.2, pyarrow 26 -> 24, openai 3 -> 1, setuptools).
#
# It also migrates an empty Label Studio database once, into $VENV/template-data/: a fresh data
# directory spends minutes in Django migrations on first start, a copy of this one starts in seconds.
# Idempotent: nothing to do when the venv holds these versions and the template.
#
# --background: start the install and return at once (`make test` does, so that it overlaps the
# project's own install and the first tests: from scratch it takes 3 to 5 minutes, mostly downloads
# and migrations). Its output goes to .labelstudio-install.log and its pid to .labelstudio-install.pid;
# tests/labelstudio_harness.wait_for_install waits for it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LS_VENV:-.venv-labelstudio}
PINS=(label-studio==1.23.2 label-studio-sdk==2.1.2)
stamp="$VENV/.labelstudio-installed"
want=$(printf '%s\n' "${PINS[@]}")
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$VENV/template-data/label_studio.sqlite3" ]; then
  exit 0
fi
if [ "${1:-}" = "--background" ]; then
  if [ -f .labelstudio-install.pid ] && kill -0 "$(cat .labelstudio-install.pid)" 2>/dev/null; then
    echo "Label Studio is being installed already (log: .labelstudio-install.log)"
    exit 0
  fi
  nohup bash "$0" > .labelstudio-install.log 2>&1 &
  echo $! > .labelstudio-install.pid
  echo "installing Label Studio in the background (log: .labelstudio-install.log)"
  exit 0
fi

started=$(date +%s)
python3 -m venv "$VENV"
echo '*' > "$VENV/.gitignore"  # never committed, whatever the project's .gitignore says
"$VENV/bin/python" -m pip install -q --upgrade pip
# Byte-compiled once on every core rather than file by file by pip (as scripts/install.sh does): with
# PYTHONDONTWRITEBYTECODE set, as in the tests, nothing would be cached at import.
"$VENV/bin/python" -m pip install -q --no-compile "${PINS[@]}"
"$VENV/bin/python" -m compileall -qq -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
installed=$(date +%s)

# Migrate in memory-backed storage when there is some: SQLite syncs to disk after each of the
# hundreds of migrations.
scratch=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT
py="$(cd "$VENV" && pwd)/bin/python"
site=$("$py" -c 'import label_studio, os; print(os.path.dirname(label_studio.__file__))')
# manage.py names its settings relative to the package folder, hence the cd.
(cd "$site" && LABEL_STUDIO_BASE_DATA_DIR="$scratch" LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false \
  "$py" manage.py migrate --no-input -v 0)
rm -rf "$VENV/template-data"
mkdir -p "$VENV/template-data"
cp "$scratch/label_studio.sqlite3" "$VENV/template-data/"
echo "$want" > "$stamp"
echo "installed ${PINS[*]} into $VENV: pip $((installed - started))s, database template $(($(date +%s) - installed))s"
