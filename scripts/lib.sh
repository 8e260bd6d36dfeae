# What the scripts that start a server of their own share; sourced, not run:
#   source "$(dirname "$0")/lib.sh"

server_pid=

# Unsets every MATCHWELL_* variable of the caller's environment, so that only what the script
# sets configures the servers and the commands it runs.
clear_matchwell_env() {
    local name
    for name in $(env | grep -o '^MATCHWELL_[A-Z_]*' || true); do
        unset "$name"
    done
}

# Starts "$@", a server that logs `listening on http://ADDRESS`, with its stderr in the file
# $1, and waits until /health/ready answers 200: matchwell listens before it has recovered,
# and answers 503 until then. Sets server_pid and address (HOST:PORT). Exits the script,
# showing the log, if the server dies or is not ready within 10 s.
serve_until_ready() {
    local log=$1
    shift
    # Made before the server starts, so that the first look for the address finds a file.
    : > "$log"
    "$@" 2> "$log" > /dev/null &
    server_pid=$!
    for _ in $(seq 1 500); do
        address=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n1 | cut -d/ -f3 || true)
        if [[ -n $address ]] && curl -sf "http://$address/health/ready" > /dev/null; then
            return
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        sleep 0.02
    done
    echo "the server did not become ready; its log:" >&2
    cat "$log" >&2
    exit 1
}

# Stops the server serve_until_ready started, if it runs.
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}

# Starts three clustered NATS servers with JetStream, data in $1, client ports 15${2}1–15${2}3
# and route ports 16${2}1–16${2}3 ($2 two digits, one pair per script so that two scripts can
# run at once), and waits until each is ready. Adds their pids to PIDS, and exports what a
# matchwell node of a measured cluster reads: the servers' URLs, a JWT secret, no rate limits,
# and a log of warnings and the start-up lines (which name the address a node listens on).
start_nats_cluster() {
  local dir=$1 ports=$2 n routes="" clients=""
  for n in 1 2 3; do
    routes="$routes${routes:+,}nats://127.0.0.1:16$ports$n"
    clients="$clients${clients:+,}nats://127.0.0.1:15$ports$n"
  done
  for n in 1 2 3; do
    nats-server -js -a 127.0.0.1 -n "n$ports$n" -p "15$ports$n" -sd "$dir/js$n" \
      --cluster_name "mw$ports" --cluster "nats://127.0.0.1:16$ports$n" --routes "$routes" \
      > "$dir/nats$n.log" 2>&1 &
    PIDS="$PIDS $!"
  done
  for n in 1 2 3; do
    until grep -q "Server is ready" "$dir/nats$n.log"; do sleep 0.2; done
  done
  export MATCHWELL_CLUSTER_NATS=$clients
  export MATCHWELL_JWT_SECRET=measure-secret-of-at-least-thirty-two-bytes
  export MATCHWELL_RATE_LIMIT_PER_S=0 MATCHWELL_READ_RATE_LIMIT_PER_S=0
  export MATCHWELL_LOG=warn,matchwell::cli=info
}

# The median of the numbers on standard input, one per line.
median() {
    sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
