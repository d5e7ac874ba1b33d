#!/usr/bin/env bash
# Checks that the server's /openapi.json drives real tools right:
#   1. lint: `redocly lint` (recommended rules) and `spectral lint` (spectral:oas), 0 errors each
#   2. clients generated from it, with no hand-written request, run the same work-queue flow
#      (scripts/openapi/flow.py, flow.ts) against a real queue-server with a token and one
#      without: openapi-python-client (PyPI) and @hey-api/openapi-ts with its fetch client
#      (npm, type-checked by tsc in strict mode). Each generator must make every operation.
# Tools are pinned and installed when missing or changed: the npm ones into
# scripts/openapi/node_modules (git-ignored, from package-lock.json), the Python ones into the
# git-ignored .venv at the repo root (MEMQ_VENV to move it). Works with CI=true and no stdin.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. scripts/lib.sh

VENV=${MEMQ_VENV:-$root/.venv}
PYTHON_TOOLS=(openapi-python-client==0.29.1 python-dateutil==2.9.0.post0)
tools=$root/scripts/openapi

command -v python3 >/dev/null 2>&1 || { echo "python3 is needed (for the venv at $VENV)" >&2; exit 1; }
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    install_debian nodejs npm
fi
lock=$(sha256sum "$tools/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$tools/node_modules/.memq-lock" 2>/dev/null)" != "$lock" ]; then
    echo "==> installing the npm tools of scripts/openapi/package-lock.json (npm ci)"
    (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock" >"$tools/node_modules/.memq-lock"
fi
installed=$("$VENV/bin/python" -m pip freeze 2>/dev/null || true)
if ! grep -qxF "${PYTHON_TOOLS[0]}" <<<"$installed" || ! grep -qxF "${PYTHON_TOOLS[1]}" <<<"$installed"; then
    echo "==> installing ${PYTHON_TOOLS[*]} into $VENV"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PYTHON_TOOLS[@]}"
fi
bin=$tools/node_modules/.bin

echo "==> building queue-server"
cargo build --locked --quiet -p queue-server --bin queue-server
work=$(mktemp -d)
# A private copy: a target dir shared with other work trees may be rebuilt under us mid-run.
cp "${CARGO_TARGET_DIR:-$root/target}/debug/queue-server" "$work/queue-server"
servers=()
trap 'stop_all "${servers[@]}"; rm -rf "$work"' EXIT

# serve [ARGS...]: a fresh queue-server on a free loopback port; sets URL.
serve() {
    local port
    port=$(free_port)
    URL=http://127.0.0.1:$port
    RUST_LOG=warn "$work/queue-server" --listen "127.0.0.1:$port" --max-memory 64MiB "$@" \
        >>"$work/server.log" 2>&1 &
    servers+=("$!")
    for _ in $(seq 100); do
        curl -fsS "$URL/healthz" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "queue-server did not start; its log:" >&2
    cat "$work/server.log" >&2
    return 1
}

serve
doc=$work/openapi.json
curl -fsS "$URL/openapi.json" -o "$doc"
operations=$(python3 -c 'import json, sys; print(sum(len(p) for p in json.load(open(sys.argv[1]))["paths"].values()))' "$doc")
echo "==> /openapi.json: $operations operations"

echo "==> redocly lint ($(node -p 'require(process.argv[1]).version' "$tools/node_modules/@redocly/cli/package.json"))"
"$bin/redocly" lint --config "$tools/redocly.yaml" "$doc"
echo "==> spectral lint, spectral:oas ($("$bin/spectral" --version))"
"$bin/spectral" lint --ruleset "$tools/.spectral.yaml" --fail-severity error "$doc"

# Every operation must come out of a generator: a skipped one is a route its users lack.
made() {
    if [ "$1" != "$operations" ]; then
        echo "$2 made $1 of the $operations operations; its log:" >&2
        cat "$3" >&2
        return 1
    fi
    echo "$2: all $operations operations generated"
}

echo "==> openapi-python-client ($("$VENV/bin/openapi-python-client" --version))"
mkdir "$work/python"
# It warns that it skips the text/plain form of the enqueue body (the octet-stream form stays).
(cd "$work/python" && "$VENV/bin/openapi-python-client" generate --path "$doc" --meta none \
    --output-path memq_client >"$work/python.log" 2>&1) || { cat "$work/python.log" >&2; exit 1; }
made "$(find "$work/python/memq_client/api" -name '*.py' ! -name __init__.py | wc -l)" \
    openapi-python-client "$work/python.log"

echo "==> @hey-api/openapi-ts with its fetch client, checked by tsc $("$bin/tsc" --version)"
mkdir "$work/ts"
(cd "$work/ts" && "$bin/openapi-ts" -i "$doc" -o gen -c @hey-api/client-fetch --no-log-file \
    >"$work/ts.log" 2>&1) || { cat "$work/ts.log" >&2; exit 1; }
made "$(grep -c '^export const ' "$work/ts/gen/sdk.gen.ts")" @hey-api/openapi-ts "$work/ts.log"
cp "$tools/flow.ts" "$work/ts/"
cat >"$work/ts/tsconfig.json" <<EOF
{
  "compilerOptions": {
    "strict": true, "noUncheckedIndexedAccess": true, "target": "ES2022", "module": "commonjs",
    "moduleResolution": "node10", "lib": ["ES2022", "DOM"], "types": ["node"],
    "typeRoots": ["$tools/node_modules/@types"], "outDir": "dist", "skipLibCheck": true
  },
  "files": ["flow.ts"]
}
EOF
"$bin/tsc" -p "$work/ts"

# Each flow on a server of its own: they create the same queues.
token="openapi-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
for auth in "no token" "a token"; do
    args=() flow_token=()
    if [ "$auth" = "a token" ]; then args=(--token "$token") flow_token=("$token"); fi
    echo "==> the flow through each client, server with $auth"
    serve "${args[@]}"
    PYTHONPATH=$work/python "$VENV/bin/python" "$tools/flow.py" "$URL" "${flow_token[@]}"
    serve "${args[@]}"
    node "$work/ts/dist/flow.js" "$URL" "${flow_token[@]}"
done
if grep -n "panicked" "$work/server.log"; then
    echo "a server panicked" >&2
    exit 1
fi
echo "openapi: lint clean, both generated clients ran the flow with and without a token"
