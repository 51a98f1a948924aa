# Common helpers for the ci/ scripts: progress lines, step logs, cache layout.
# shellcheck shell=bash
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=ci/versions.sh
. "$REPO_ROOT/ci/versions.sh"

# Version-keyed artifacts live outside the checkout so a fresh clone reuses them.
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/datadog-csi}
LOG_DIR=${LOG_DIR:-$CACHE_DIR/logs}
BIN_DIR=$REPO_ROOT/bin
mkdir -p "$CACHE_DIR" "$LOG_DIR" "$BIN_DIR"
export GOFLAGS=${GOFLAGS:--buildvcs=false}

_t0=$(date +%s)
log() { printf '[%s +%4ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - _t0 ))" "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# step NAME CMD...: runs CMD with its output in $LOG_DIR/NAME.log; on failure
# names the step and shows the log's tail, so a red CI says where to look.
step() {
	local name=$1; shift
	local logf=$LOG_DIR/$name.log s rc
	s=$(date +%s)
	log "$name ..."
	# Not `if ! cmd`: bash ignores errexit inside a condition, even in functions.
	set +e
	( set -e; "$@" ) >"$logf" 2>&1
	rc=$?
	set -e
	if (( rc != 0 )); then
		printf '\nERROR: step %q failed (exit %d); last lines of %s:\n' "$name" "$rc" "$logf" >&2
		tail -n 40 "$logf" >&2
		exit 1
	fi
	log "$name done in $(( $(date +%s) - s ))s"
}

# with_lock NAME CMD...: serialize concurrent builds of the same cache entry.
with_lock() {
	local name=$1; shift
	mkdir -p "$CACHE_DIR/locks"
	( flock 9; "$@" ) 9>"$CACHE_DIR/locks/$name.lock"
}

# go_mod_dir MODULE@VERSION: the module's extracted source in the module cache.
go_mod_dir() { (cd "$CACHE_DIR" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p'); }
