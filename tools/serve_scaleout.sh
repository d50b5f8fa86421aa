#!/usr/bin/env bash
# Scale-out check: two `t5edge serve` replicas on loopback behind nginx (the
# Debian package; installed here if missing, as root), a bounded load through
# nginx, and one replica killed (SIGKILL, a crash) mid-load. Passes when every
# request is answered 200 with the command line's ids: nginx retries the
# requests the dead replica dropped on the other one (proxy_next_upstream
# with non_idempotent, since generation is a POST) and marks it down
# (max_fails/fail_timeout: open-source nginx has passive health checks only).
#
#   tools/serve_scaleout.sh [T5EDGE_BINARY] [RESULT_JSON]
#
# Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
T5EDGE=${1:-target/release/t5edge}
OUT=${2:-}
REQUESTS=${REQUESTS:-400}
CONCURRENCY=${CONCURRENCY:-8}

if ! command -v nginx >/dev/null; then
    apt-get install -y nginx-light >/dev/null 2>&1 || apt-get install -y nginx >/dev/null
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

start_replica() { # $1: name; prints the bound address
    "$T5EDGE" serve --port 0 --max-batch 16 >"$work/$1.out" 2>"$work/$1.err" &
    pids+=($!)
    echo $! >"$work/$1.pid"
    for _ in $(seq 100); do
        if grep -q listening "$work/$1.out"; then break; fi
        sleep 0.1
    done
    sed -n 's|listening on http://||p' "$work/$1.out"
}
a=$(start_replica a)
b=$(start_replica b)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
error_log $work/error.log warn;
pid $work/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    upstream t5edge {
        server $a max_fails=1 fail_timeout=10s;
        server $b max_fails=1 fail_timeout=10s;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://t5edge;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 1s;
            proxy_read_timeout 60s;
        }
    }
}
EOF
nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' &
pids+=($!)
sleep 0.5

# The command line's answer for the one request used.
want=$("$T5EDGE" generate --json --max-new-tokens 32 --min-new-tokens 32 --input-ids 37,12,99,1 2>/dev/null)

python3 - "$port" "$(cat "$work/a.pid")" "$REQUESTS" "$CONCURRENCY" "$want" "$OUT" <<'EOF'
import http.client, json, os, signal, sys, threading, time
port, victim, n, conc, want, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5]), sys.argv[6]
body = json.dumps({"input_ids": [37, 12, 99, 1], "max_new_tokens": 32, "min_new_tokens": 32})
lock = threading.Lock()
it = iter(range(n))
done, statuses, wrong, killed_at = [0], {}, [0], [None]
def worker():
    while True:
        with lock:
            i = next(it, None)
        if i is None:
            return
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            c.request("POST", "/v1/generate", body, {"content-type": "application/json"})
            r = c.getresponse(); st, b = r.status, r.read()
        except Exception as e:
            st, b = type(e).__name__, b""
        c.close()
        with lock:
            statuses[st] = statuses.get(st, 0) + 1
            if st == 200 and json.loads(b)["ids"] != want["ids"]:
                wrong[0] += 1
            done[0] += 1
            if done[0] == n // 4 and killed_at[0] is None:
                os.kill(victim, signal.SIGKILL)
                killed_at[0] = done[0]
t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(conc)]
[t.start() for t in ts]; [t.join() for t in ts]
res = {"requests": n, "concurrency": conc, "killed_replica_after": killed_at[0],
       "statuses": {str(k): v for k, v in statuses.items()}, "wrong_answers": wrong[0],
       "wall_s": round(time.time() - t0, 2), "load": os.getloadavg()}
print(json.dumps(res))
if out:
    with open(out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(out + ".tmp", out)
ok = statuses.get(200) == n and wrong[0] == 0 and killed_at[0] is not None
print("PASS: every request answered with the CLI's ids" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
