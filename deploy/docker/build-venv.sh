#!/bin/sh
# Build the runtime virtualenv of one service from the workspace lockfile:
#   build-venv.sh SERVICE VENV [PYTHON]
# Used by the builder stage of every services/<name>/Dockerfile, and run as it is by
# tests/deploy/test_images.py (no Docker engine needed). Needs `uv` (or $UV) on PATH and
# the repository root as the working directory.
#  1. third-party dependencies of crm-SERVICE, pinned with hashes, exported from uv.lock
#     (no dev tools, no workspace packages);
#  2. wheels of crm-protos, crm-platform and crm-SERVICE built from the source tree;
#  3. a fresh venv with exactly those, byte-compiled (the image's root filesystem is
#     read-only, so nothing is compiled at run time), then a dependency check.
set -eu
service=$1
venv=$2
python=${3:-python3}
uv=${UV:-uv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$uv" export --frozen --no-dev --no-emit-workspace --package "crm-$service" \
  --format requirements.txt --quiet --output-file "$work/requirements.txt"
for package in crm-protos crm-platform "crm-$service"; do
  "$uv" build --wheel --package "$package" --out-dir "$work/wheels" --quiet
done
"$uv" venv --quiet --python "$python" "$venv"
"$uv" pip install --quiet --python "$venv/bin/python" --compile-bytecode --no-deps \
  --require-hashes -r "$work/requirements.txt"
"$uv" pip install --quiet --python "$venv/bin/python" --compile-bytecode --no-deps \
  "$work"/wheels/*.whl
"$uv" pip check --quiet --python "$venv/bin/python"
