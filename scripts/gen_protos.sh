#!/usr/bin/env bash
# Regenerates libs/crm-protos from protos/ reproducibly (pinned tools from uv.lock).
set -euo pipefail
cd "$(dirname "$0")/.."
out=libs/crm-protos/src
rm -rf "$out/crm"
mkdir -p "$out"
(cd protos && buf format -w && buf lint)
protos=$(cd protos && find crm -name '*.proto' | LC_ALL=C sort)
include=$(python -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
(cd protos && python -m grpc_tools.protoc -I . -I "$include" \
  --python_out="../$out" --mypy_out="../$out" \
  --grpc_python_out="../$out" --mypy_grpc_out="../$out" $protos) 2> >(grep -v '^Writing mypy' >&2)
find "$out/crm" -type d -exec touch {}/__init__.py \;
touch "$out/crm/py.typed"
