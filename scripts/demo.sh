#!/usr/bin/env bash
# A short tour of peer on one machine, in a throw-away home (`make demo`).
# Expects `peer` on PATH (make demo puts .venv/bin first).
set -euo pipefail

if ! command -v peer >/dev/null 2>&1; then
    echo "demo: \`peer\` is not on PATH (run \`make demo\`)" >&2
    exit 1
fi

DEMO="$(mktemp -d "${TMPDIR:-/tmp}/peer-demo.XXXXXX")"
SERVERS=()
cleanup() {
    for pid in "${SERVERS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DEMO"
}
trap cleanup EXIT

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


# Start `peer serve` (mutual TLS) for a home in the background; sets PORT to its port.
serve() {
    local home=$1 out="$DEMO/$(basename "$1").serve"
    show peer --home "$home" serve --listen 127.0.0.1:0 "&"
    peer --home "$home" serve --listen 127.0.0.1:0 --json >"$out" 2>&1 &
    SERVERS+=($!)
    for _ in $(seq 100); do
        PORT=$(sed -n 's/.*"listen": "127.0.0.1:\([0-9]*\)".*/\1/p' "$out")
        [[ -n $PORT ]] && return 0
        sleep 0.1
    done
    echo "demo: the node in $home did not start:" >&2
    cat "$out" >&2
    return 1
}

A="$DEMO/laptop" B="$DEMO/server" C="$DEMO/nas"
echo "peer demo: three nodes on this machine (laptop, server, nas), in $DEMO"
echo "They sync along a line: laptop <-> server <-> nas. The nas never talks to the laptop."

step "Create the laptop: a signing identity, a new sync key, a store"
run peer --home "$A" init --name laptop

step "The other two devices join with the same sync key (it never leaves your devices)"
KEY=$(peer --home "$A" key export)
show peer --home "$B" init --name server --key '$(peer --home laptop key export)'
peer --home "$B" init --name server --key "$KEY"
show peer --home "$C" init --name nas --key '$(peer --home laptop key export)'
peer --home "$C" init --name nas --key "$KEY"

step "Each device writes to its own log"
run peer --home "$A" append --tag notes "written on the laptop"
printf '%s$ seq 1 2000 | peer --home laptop append --tag numbers%s\n' "$dim" "$reset"
seq 1 2000 | peer --home "$A" append --tag numbers
run peer --home "$B" append --tag notes "written on the server"
run peer --home "$C" append --tag notes "written on the nas"

step "Start all three (mutual TLS: each node talks only to the nodes it pins)"
serve "$A"; PORT_A=$PORT
serve "$B"; PORT_B=$PORT
serve "$C"; PORT_C=$PORT
ID_A=$(peer --home "$A" id) ID_B=$(peer --home "$B" id) ID_C=$(peer --home "$C" id)
echo "laptop $ID_A on 127.0.0.1:$PORT_A"
echo "server $ID_B on 127.0.0.1:$PORT_B"
echo "nas    $ID_C on 127.0.0.1:$PORT_C"

step "Pin the line: laptop <-> server <-> nas (ids as printed by \`peer id\`)"
run peer --home "$A" peers add "$ID_B" "127.0.0.1:$PORT_B" --name server
run peer --home "$B" peers add "$ID_A" "127.0.0.1:$PORT_A" --name laptop
run peer --home "$B" peers add "$ID_C" "127.0.0.1:$PORT_C" --name nas
run peer --home "$C" peers add "$ID_B" "127.0.0.1:$PORT_B" --name server

step "The laptop pins the nas, but the nas does not pin the laptop: the nas refuses it"
run peer --home "$A" peers add "$ID_C" "127.0.0.1:$PORT_C" --name nas
show peer --home laptop sync nas
peer --home "$A" sync nas || true
run peer --home "$A" peers remove nas

step "The server syncs with the laptop: pulls what it lacks, pushes what the laptop lacks"
run peer --home "$B" sync laptop

step "The nas syncs with the server only"
run peer --home "$C" sync server

step "The nas now holds the laptop's records, relayed by the server"
run peer --home "$C" status
run peer --home "$C" tail --tag notes

step "Run the line again: the laptop gets the nas's record through the server"
run peer --home "$B" sync laptop --json
run peer --home "$A" tail --tag notes

step "Nothing left to move: a second sync transfers nothing"
run peer --home "$C" sync

step "Every node checks every chain, signature and decryption"
run peer --home "$A" verify
run peer --home "$B" verify
run peer --home "$C" verify

step "Status as JSON, for scripts (pretty-printed here)"
show peer --home nas status --json "|" python3 -m json.tool
peer --home "$C" status --json | python3 -m json.tool

printf '\n%sdone: three devices, one line of syncs, the same logs everywhere.%s\n' "$bold" "$reset"
