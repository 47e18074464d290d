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


# Start the daemon of a home in the background on a given port; waits until it serves.
serve() {
    local home=$1 port=$2 out="$DEMO/$(basename "$1").serve"
    show peer --home "$home" serve --listen "127.0.0.1:$port" --interval 10 "&"
    peer --home "$home" serve --listen "127.0.0.1:$port" --interval 10 --json >"$out" 2>&1 &
    SERVERS+=($!)
    for _ in $(seq 100); do
        grep -q '"listen"' "$out" && return 0
        sleep 0.1
    done
    echo "demo: the node in $home did not start:" >&2
    cat "$out" >&2
    return 1
}

# Wait until a home holds `count` records in all (the daemons sync by themselves).
await_records() {
    local home=$1 count=$2 held=0
    for _ in $(seq 200); do
        held=$(peer --home "$home" status --json | python3 -c \
            'import json, sys; print(sum(l["next_idx"] for l in json.load(sys.stdin)["logs"]))')
        if [[ $held -ge $count ]]; then
            echo "$(basename "$home") holds $held records"
            return 0
        fi
        sleep 0.1
    done
    echo "demo: $(basename "$home") holds only $held of $count records" >&2
    return 1
}

A="$DEMO/laptop" B="$DEMO/server" C="$DEMO/nas"
echo "peer demo: three devices on this machine (laptop, server, nas), in $DEMO"
echo "Each runs the daemon; they find each other, sync by themselves and stay connected."

step "Create the laptop: a signing identity, a new sync key, a store"
run peer --home "$A" init --name laptop

step "The other two devices join with the same sync key (it never leaves your devices)"
KEY=$(peer --home "$A" key export)
show peer --home "$B" init --name server --key '$(peer --home laptop key export)'
peer --home "$B" init --name server --key "$KEY"
show peer --home "$C" init --name nas --key '$(peer --home laptop key export)'
peer --home "$C" init --name nas --key "$KEY"

step "Each device writes to its own log, before any network"
run peer --home "$A" append --tag notes "written on the laptop"
printf '%s$ seq 1 2000 | peer --home laptop append --tag numbers%s\n' "$dim" "$reset"
seq 1 2000 | peer --home "$A" append --tag numbers
run peer --home "$B" append --tag notes "written on the server"
run peer --home "$C" append --tag notes "written on the nas"

step "Pin each other (mutual TLS: a node talks only to the node ids it pins)"
read -r PORT_A PORT_B PORT_C < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
ID_A=$(peer --home "$A" id) ID_B=$(peer --home "$B" id) ID_C=$(peer --home "$C" id)
run peer --home "$A" peers add "$ID_B" "127.0.0.1:$PORT_B" --name server
run peer --home "$A" peers add "$ID_C" "127.0.0.1:$PORT_C" --name nas
run peer --home "$B" peers add "$ID_A" "127.0.0.1:$PORT_A" --name laptop
run peer --home "$B" peers add "$ID_C" "127.0.0.1:$PORT_C" --name nas
run peer --home "$C" peers add "$ID_A" "127.0.0.1:$PORT_A" --name laptop
run peer --home "$C" peers add "$ID_B" "127.0.0.1:$PORT_B" --name server

step "Start the three daemons: no \`peer sync\` anywhere, they mesh by themselves"
serve "$A" "$PORT_A"
serve "$B" "$PORT_B"
serve "$C" "$PORT_C"
await_records "$A" 2003
await_records "$B" 2003
await_records "$C" 2003

step "Live: a program on the nas follows the notes; the laptop writes, the nas sees it at once"
show python3 follow.py "(peer.api: subscribe on the nas, append on the laptop)"
python3 - "$A" "$C" <<'PY'
import asyncio, sys, time
from peer import api

async def main(laptop: str, nas: str) -> None:
    async with await api.connect(nas) as on_nas, await api.connect(laptop) as on_laptop:
        since = await on_nas.get_index()  # start from what the nas holds now
        follow = on_nas.subscribe(tags=["notes"], since=since)
        for n in range(3):
            sent = time.perf_counter()
            await on_laptop.append("notes", f"live note {n} from the laptop")
            message = await asyncio.wait_for(anext(follow), 5)
            ms = (time.perf_counter() - sent) * 1000
            print(f"nas received {message.text!r} (idx {message.idx}) {ms:.1f} ms after the write")
        await follow.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
PY

step "A write from the command line reaches the others too"
run peer --home "$B" append --tag notes "written on the server, while everything runs"
await_records "$A" 2007
run peer --home "$A" tail --tag notes

step "The laptop's view of the mesh: each peer's link and how much of each log it holds"
run peer --home "$A" status

step "Every node checks every chain, signature and decryption"
run peer --home "$A" verify
run peer --home "$B" verify
run peer --home "$C" verify

step "Status as JSON, for scripts (pretty-printed here; the daemon part)"
show peer --home nas status --json "|" python3 -m json.tool
peer --home "$C" status --json | python3 -c 'import json, sys; d = json.load(sys.stdin); print(json.dumps({"daemon": d["daemon"], "peers": d["peers"]}, indent=2))'

printf '\n%sdone: three daemons meshed by themselves; writes anywhere reach everyone live.%s\n' "$bold" "$reset"
