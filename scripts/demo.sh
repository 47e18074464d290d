#!/usr/bin/env bash
# A short tour of peer on one machine, in a throw-away home (`make demo`).
# Expects `peer` on PATH (make demo puts .venv/bin first).
set -euo pipefail

if ! command -v peer >/dev/null 2>&1; then
    echo "demo: \`peer\` is not on PATH (run \`make demo\`)" >&2
    exit 1
fi

PEER_HOME="$(mktemp -d "${TMPDIR:-/tmp}/peer-demo.XXXXXX")"
export PEER_HOME
trap 'rm -rf "$PEER_HOME"' EXIT

if [[ -t 1 ]]; then
    bold=$'\e[1m' dim=$'\e[2m' reset=$'\e[0m'
else
    bold='' dim='' reset=''
fi

step() {
    printf '\n%s== %s%s\n' "$bold" "$1" "$reset"
}

# Show a command (quoting arguments that contain spaces), then run it.
show() {
    local line='$' arg
    for arg in "$@"; do
        if [[ $arg == *[[:space:]]* ]]; then line+=" \"$arg\""; else line+=" $arg"; fi
    done
    printf '%s%s%s\n' "$dim" "$line" "$reset"
}

run() {
    show "$@"
    "$@"
}

echo "peer demo: a throw-away node in $PEER_HOME (removed when the demo ends)"

step "Create this node: signing identity, sync key and store"
run peer init --name laptop

step "The node's id (what another device pins to trust it)"
run peer id

step "Append one record to the 'notes' log"
run peer append --tag notes "first note"

step "Append one record per stdin line"
printf '%s$ printf "buy milk\\ncall the bank\\nwater the plants\\n" | peer append --tag notes%s\n' \
    "$dim" "$reset"
printf 'buy milk\ncall the bank\nwater the plants\n' | peer append --tag notes

step "Read the log back, decrypted (one JSON object per record)"
run peer tail --tag notes

step "What this node holds"
run peer status

step "The same as JSON, for scripts (one line; pretty-printed here)"
if command -v python3 >/dev/null 2>&1; then
    show peer status --json "|" python3 -m json.tool
    peer status --json | python3 -m json.tool
else
    run peer status --json
fi

step "Check every chain, signature and decryption"
run peer verify

step "The sync key, to set up your other devices with \`peer init --key KEY\`"
echo "(This key is SECRET: anyone who has it can read all your records.)"
run peer key export

printf '\n%sdone.%s\n' "$bold" "$reset"
