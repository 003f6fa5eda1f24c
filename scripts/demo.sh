#!/usr/bin/env bash
# Starts a 3-member etcd cluster on loopback and the gateway in the foreground in front of it.
# Ctrl-C stops the gateway and the members and removes their data.
set -euo pipefail
cd "$(dirname "$0")/.."

ETCD=e2e/bin/etcd
ETCDCTL=e2e/bin/etcdctl
GATEWAY=bin/etcd-gateway
LISTEN=${LISTEN:-127.0.0.1:23790}
base=${DEMO_BASE_PORT:-32379}

data=$(mktemp -d "${TMPDIR:-/dev/shm}/etcd-gateway-demo.XXXXXX")
pids=()
cleanup() {
	trap - INT TERM EXIT
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	# A member whose peers are gone can take a while to stop gracefully; give it 3 s.
	for _ in $(seq 30); do
		alive=0
		for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		[ "$alive" = 0 ] && break
		sleep 0.1
	done
	for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$data"
	echo "demo stopped; cluster data removed"
}
trap cleanup INT TERM EXIT

cluster=""
for i in 1 2 3; do
	cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 10 * i + 1))"
done
endpoints=""
for i in 1 2 3; do
	client=$((base + 10 * i))
	peer=$((base + 10 * i + 1))
	"$ETCD" --name "m$i" --data-dir "$data/m$i" \
		--listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
		--listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
		--initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token etcd-gateway-demo \
		--unsafe-no-fsync --log-level error >"$data/m$i.log" 2>&1 &
	pids+=($!)
	endpoints+="${endpoints:+,}127.0.0.1:$client"
done

for _ in $(seq 1 100); do
	if "$ETCDCTL" --endpoints="$endpoints" endpoint health >/dev/null 2>&1; then break; fi
	sleep 0.1
done
"$ETCDCTL" --endpoints="$endpoints" endpoint health

cat <<MSG

etcd members: $endpoints (logs in $data)
gateway:      $LISTEN

Try, in another terminal:
  $ETCDCTL --endpoints=$LISTEN put greeting hello
  $ETCDCTL --endpoints=$LISTEN get greeting

Ctrl-C stops everything.

MSG
"$GATEWAY" start --endpoints="$endpoints" --listen-addr="$LISTEN" --log-format=console &
pids+=($!)
wait "${pids[-1]}"
