#!/usr/bin/env bash
# The dedicated Docker engine of the offline cluster: its own data root (under
# $CACHE_DIR, so images survive a fresh clone), exec root, socket and no
# default bridge, so it never touches a Docker the user already runs.
#
#   ci/docker.sh up     start it (or reuse it); print `export DOCKER_HOST=...`
#   ci/docker.sh down   stop it (images stay in the data root)
#   ci/docker.sh env    print `export DOCKER_HOST=...`
#
# Where a local `docker run --privileged` fails (a sandbox whose capability
# bounding set lacks CAP_SYS_RESOURCE, say), its default runtime becomes
# ci/sandbox-runc, a runc wrapper; the probe is a real privileged container of
# our own pause image, never a guess.
. "$(dirname "$0")/lib.sh"

RUN_DIR=/run/datadog-csi
SOCK=$RUN_DIR/docker.sock
PIDFILE=$RUN_DIR/docker.pid
DATA_ROOT=$CACHE_DIR/docker/data-root
DAEMON_JSON=$CACHE_DIR/docker/daemon.json
WRAPPER=$CACHE_DIR/docker/sandbox-runc
export DOCKER_HOST=unix://$SOCK

alive() { [[ -S $SOCK ]] && timeout 10 docker version >/dev/null 2>&1; }

install_packages() {
	local need=()
	command -v dockerd >/dev/null || need+=(docker.io)
	command -v debootstrap >/dev/null || need+=(debootstrap)
	command -v iptables >/dev/null || need+=(iptables)
	command -v gcc >/dev/null || need+=(gcc libc6-dev)
	command -v docker >/dev/null || need+=(docker.io)
	[[ ${#need[@]} -eq 0 ]] && return 0
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
}

build_wrapper() {
	(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$WRAPPER.tmp" ./ci/sandbox-runc)
	mv "$WRAPPER.tmp" "$WRAPPER"
}

write_config() {
	local runtime=$1
	mkdir -p "$(dirname "$DAEMON_JSON")" "$DATA_ROOT"
	cat >"$DAEMON_JSON" <<JSON
{
  "data-root": "$DATA_ROOT",
  "exec-root": "$RUN_DIR/exec",
  "pidfile": "$PIDFILE",
  "hosts": ["$DOCKER_HOST"],
  "bridge": "none",
  "iptables": false,
  "ip-forward": false,
  "ip-masq": false,
  "userland-proxy": true,
  "storage-driver": "overlay2",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"},
  "runtimes": {"sandbox-runc": {"path": "$WRAPPER"}},
  "default-runtime": "$runtime"
}
JSON
}

start() {
	mkdir -p "$RUN_DIR"
	# Leftovers of a killed run: a pidfile of a dead process, a stale socket.
	if [[ -f $PIDFILE ]] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fi
	if [[ ! -f $PIDFILE ]]; then
		rm -f "$SOCK"
		unmount_leftovers
	fi
	nohup dockerd --config-file "$DAEMON_JSON" >>"$LOG_DIR/dockerd.log" 2>&1 &
	local i
	for i in $(seq 1 60); do alive && return 0; sleep 1; done
	die "dockerd did not answer on $SOCK within 60s; see $LOG_DIR/dockerd.log"
}

stop() {
	if [[ -f $PIDFILE ]]; then
		local pid i; pid=$(cat "$PIDFILE")
		kill "$pid" 2>/dev/null || true
		for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$PIDFILE" "$SOCK"
	fi
	unmount_leftovers
}

# unmount_leftovers: dockerd bind-mounts its data root onto itself and leaves
# that behind, as a killed dockerd leaves its overlay and netns mounts.
unmount_leftovers() {
	local m
	for m in $(awk -v a="$DATA_ROOT" -v b="$RUN_DIR" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' /proc/self/mountinfo | sort -ru); do
		umount -l "$m" 2>/dev/null || true
	done
}

pause_image() {
	docker image inspect datadog-csi/pause:probe >/dev/null 2>&1 && return 0
	local ctx; ctx=$(mktemp -d)
	gcc -static -O2 -o "$ctx/pause" "$REPO_ROOT/ci/images/pause/pause.c"
	printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
	docker build -q -t datadog-csi/pause:probe "$ctx" >/dev/null
	rm -rf "$ctx"
}

# privileged_works: a real privileged container, started and checked running.
privileged_works() {
	docker rm -f dcsi-privileged-probe >/dev/null 2>&1 || true
	if docker run -d --name dcsi-privileged-probe --privileged datadog-csi/pause:probe >/dev/null 2>&1 &&
		[[ $(docker inspect -f '{{.State.Running}}' dcsi-privileged-probe 2>/dev/null) == true ]]; then
		docker rm -f dcsi-privileged-probe >/dev/null 2>&1
		return 0
	fi
	docker rm -f dcsi-privileged-probe >/dev/null 2>&1 || true
	return 1
}

# current_runtime: the default runtime `up` chose (runc, or sandbox-runc where a
# plain privileged container fails); ci/node-image.sh builds the node to match.
current_runtime() {
	[[ -f $DAEMON_JSON ]] || die "no $DAEMON_JSON: the dedicated dockerd was never set up; run ci/docker.sh up (make cluster)"
	sed -n 's/.*"default-runtime": "\(.*\)".*/\1/p' "$DAEMON_JSON"
}

up() {
	step docker-packages install_packages
	[[ -x $WRAPPER && $WRAPPER -nt $REPO_ROOT/ci/sandbox-runc/main.go ]] || step sandbox-runc build_wrapper
	# The chosen runtime survives restarts; the rest of the config is rewritten
	# each time so that a changed script takes effect.
	local runtime=runc old=""
	[[ -f $DAEMON_JSON ]] && { runtime=$(sed -n 's/.*"default-runtime": "\(.*\)".*/\1/p' "$DAEMON_JSON"); old=$(cat "$DAEMON_JSON"); }
	write_config "${runtime:-runc}"
	if alive && [[ $old == "$(cat "$DAEMON_JSON")" ]]; then
		log "dockerd already running on $SOCK"
	else
		stop
		step dockerd-start start
	fi
	step pause-image pause_image
	if ! privileged_works; then
		if grep -q '"default-runtime": "sandbox-runc"' "$DAEMON_JSON"; then
			die "a privileged container fails even with the sandbox-runc runtime; see $LOG_DIR/dockerd.log"
		fi
		log "privileged containers fail here; restarting dockerd with the sandbox-runc runtime"
		write_config sandbox-runc
		stop
		step dockerd-start start
		privileged_works || die "a privileged container fails even with the sandbox-runc runtime; see $LOG_DIR/dockerd.log"
	fi
	echo "export DOCKER_HOST=$DOCKER_HOST"
}

case ${1:-} in
	up) up ;;
	down) stop ;;
	env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
	runtime) current_runtime ;;
	*) die "usage: $0 up|down|env|runtime" ;;
esac
