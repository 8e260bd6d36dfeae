#!/usr/bin/env bash
# Checks /openapi.json against a real `matchwell serve` with Schemathesis (not part of CI; the
# Rust test `openapi_states_the_server_rules` checks the same rules without Python).
#
# Builds the binary, starts a fresh server on a temporary data directory with the per-user
# rate limits off (Schemathesis sends thousands of requests as one user), mints a service
# token (which may name any user in `user_id`, so that generated user ids are used rather
# than refused with 403) and an admin token for /internal/*, and runs every check of
# Schemathesis but one (use_after_free, below) on every route, generating valid and invalid
# data. Schemathesis is installed in a virtualenv of its own under target/schemathesis/
# (ignored by git), with the server's data and Schemathesis' reports.
#
#   scripts/schemathesis.sh                    # 100 examples per operation, a random seed
#   MAX_EXAMPLES=500 SEED=7 scripts/schemathesis.sh
#
# What it accepts (scripts/schemathesis.toml): a request the schema allows may meet a state
# that refuses it with a documented status, 404 (no such entry or challenge), 409
# (ALREADY_QUEUED, CHALLENGE_EXISTS, TOO_MANY_CHALLENGES) or, for an enqueue, 422
# (IDEMPOTENCY_KEY_REUSED: the same Idempotency-Key sent before with another body); never 400.
# One rule JSON Schema cannot state, that a challenge's opponent is not its challenger, is
# kept out of the generated valid bodies by scripts/schemathesis_hooks.py.
#
# Settings (environment): MAX_EXAMPLES (100), SEED (random), PROFILE (dev; or release),
# SCHEMATHESIS_VERSION (4.32.5).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

max_examples=${MAX_EXAMPLES:-100}
profile=${PROFILE:-dev}
version=${SCHEMATHESIS_VERSION:-4.32.5}
work=$PWD/target/schemathesis
venv=$work/venv

mkdir -p "$work"
if [[ ! -x $venv/bin/st ]] || [[ $("$venv/bin/st" --version) != *" $version" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$version"
fi

bin=$(cargo build --quiet --bin matchwell --profile "$profile" --message-format json \
    | python3 -c 'import json, sys
print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')

run=$(mktemp -d "$work/run.XXXXXX")
cleanup() {
    stop_server
    rm -rf "$run/data"
}
trap cleanup EXIT

# Only these variables configure the server and the token command.
clear_matchwell_env
export MATCHWELL_JWT_SECRET MATCHWELL_SCHEMATHESIS_USER=schemathesis-service
MATCHWELL_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')

serve_until_ready "$run/server.log" env MATCHWELL_LISTEN=127.0.0.1:0 MATCHWELL_DATA_DIR="$run/data" \
    MATCHWELL_RATE_LIMIT_PER_S=0 MATCHWELL_READ_RATE_LIMIT_PER_S=0 \
    MATCHWELL_LOG=warn,matchwell::cli=info "$bin" serve
export MATCHWELL_SCHEMATHESIS_TOKEN MATCHWELL_SCHEMATHESIS_ADMIN_TOKEN
MATCHWELL_SCHEMATHESIS_TOKEN=$("$bin" token --user "$MATCHWELL_SCHEMATHESIS_USER" --role service --log warn)
MATCHWELL_SCHEMATHESIS_ADMIN_TOKEN=$("$bin" token --user schemathesis-admin --role admin --log warn)

seed=()
if [[ -n ${SEED:-} ]]; then
    seed=(--seed "$SEED")
fi
# Every check but use_after_free, which takes a DELETE for a removal: here it cancels, and the
# cancelled entry or challenge stays readable with its status `cancelled` (SPEC §4).
args=(--config-file scripts/schemathesis.toml run "http://$address/openapi.json"
    --checks all --exclude-checks use_after_free --mode all --max-examples "$max_examples"
    "${seed[@]}" --report ndjson --report-dir "$run")
echo "st ${args[*]}"
PYTHONPATH=scripts SCHEMATHESIS_HOOKS=schemathesis_hooks "$venv/bin/st" "${args[@]}"
