#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# tests/bench/run.sh: saslgate's own benchmark, side by side with nginx's mail proxy.
#
# Measures saslgate against nginx on any Debian box (as root):
# builds saslgate (Release) and sgload, makes RSA-2048 and ECDSA P-256
# certificates and a sasldb user bench/benchpw, starts Postfix's smtp-sink on
# 127.0.0.1 as the upstream, starts each target in its own cgroup (v1
# cpuacct or v2) so its CPU is measured from the kernel's accounting, runs the
# scenarios, stops everything it started and prints a table with the ratios
# to nginx.  It prints figures; it asserts no timings (not part of ctest).
#
#   S1  new TLS session + AUTH PLAIN + one 4 KiB message, 32 clients
#   S1R S1 with TLS session resumption (sgload --resume: tickets)
#   S2  20 sessions x 200 messages of 4 KiB
#   S3  4 sessions x 5 messages of 10 MiB
#   S4  IDLE_N idle authenticated TLS sessions: PSS (and RSS) per session
#       from /proc/PID/smaps_rollup over the target's cgroup, delta over a
#       fresh server's baseline
#   S4X saslgate only: IDLE_BIG (10,000) idle sessions held            [once]
#   S5  saslgate only: one 100 MiB message, byte-exact at the upstream, and
#       saslgate's RSS growth while it passes                          [once]
#
# Targets: saslgate (workers = 1, RSA), saslgate-auto (workers = auto),
# saslgate-ecdsa (RSA + ECDSA certificates; sgload offers ECDSA, so it gets
# it), saslgate-pool (workers = 1, RSA, [upstream] pool_size = 8: kept
# upstream connections; not in the default TARGETS), saslgate-cache
# (workers = 1, RSA, [sasl] cache_size = 1000: the credential cache; not
# in the default TARGETS), saslgate-alt (as saslgate, but the binary
# ALT_BIN: another build, for a before/after in one run), nginx (the shared rig's nginx.conf: mail proxy, XCLIENT, auth_http
# stub that accepts every password), direct (smtp-sink itself: the ceiling).
#
# Env knobs [defaults]:
#   REPS [3]   medians of REPS runs (targets rotated every rep)
#   TARGETS ["saslgate saslgate-auto saslgate-ecdsa nginx"]  (nginx is
#       dropped, with a note, when it cannot be installed)
#   SCENARIOS ["S1 S1R S2 S3 S4 S4X S5"]
#   AUTO_SCENARIOS ["S1 S2 S3"]  ECDSA_SCENARIOS ["S1"]  POOL_SCENARIOS ["S1 S2"]
#   CACHE_SCENARIOS ["S1 S1R"]
#       (the variants run only these)
#   S1_TOTAL [3000] S1_CONNS [32] S1_DUR [20]  S2_CONNS [20] S2_MPC [200] S2_DUR [60]
#   S3_CONNS [4] S3_MPC [5] S3_DUR [120]  IDLE_N [2000] IDLE_HOLD [10]
#   IDLE_SETUP_MAX [160]  IDLE_BIG [10000]  S5_SIZE [104857600]
#   PROFILE [0] (1: extra perf runs of PROFILE_SCENARIOS ["S1 S2 S3"], not counted)
#   IDENTITY [header] ([upstream] identity; smtp-sink's XCLIENT offers only
#            NAME and HELO, no LOGIN, so identity = xclient fails closed
#            with 454 at AUTH in front of it; xforward works too)
#   LOG_LEVEL [info]  SKIP_BUILD [0]  SKIP_INSTALL [0]  BUILD [<repo>/build-bench]
#   WORK [/tmp/saslgate-ownbench] (its base name also names the cgroups, so two
#       runs with different WORK and PORT_BASE do not meet)  OUT [$WORK/results-<timestamp>]
#   PORT_BASE [14500]: sink +25, saslgate +87, saslgate-auto +88,
#       saslgate-ecdsa +89, saslgate-pool +86, saslgate-cache +85,
#       saslgate-alt +84, nginx +90,
#       nginx auth stub +80
# Quick pass:  REPS=1 S1_TOTAL=500 IDLE_N=300 SCENARIOS="S1 S2 S3 S4" tests/bench/run.sh
#
# Method (the anchor rig's, tests/bench/anchors.sh, so the figures compare):
# server CPU = delta of the target cgroup's cpuacct.usage (v1) or cpu.stat
# usage_usec (v2) around the load run, divided by ok messages; every process
# the target forks is in its cgroup.  The load generator shares the box and
# reports its own CPU.  Everything listens on 127.0.0.1; every load run is
# bounded in count and time; on exit (also on ^C) everything started is
# stopped by PID, then whatever is left in our cgroups.
set -u
export LC_ALL=C
BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH/../.." && pwd)
RIG_CONF=${RIG_CONF:-$ROOT/../shared/bench/conf}
[ -d "$RIG_CONF" ] || RIG_CONF=/work/shared/bench/conf
WORK=${WORK:-/tmp/saslgate-ownbench}
OUT=${OUT:-$WORK/results-$(date +%Y%m%d-%H%M%S)}
BUILD=${BUILD:-$ROOT/build-bench}
REPS=${REPS:-3}
TARGETS=${TARGETS:-"saslgate saslgate-auto saslgate-ecdsa nginx"}
SCENARIOS=${SCENARIOS:-"S1 S1R S2 S3 S4 S4X S5"}
AUTO_SCENARIOS=${AUTO_SCENARIOS:-"S1 S2 S3"}
ECDSA_SCENARIOS=${ECDSA_SCENARIOS:-"S1"}
POOL_SCENARIOS=${POOL_SCENARIOS:-"S1 S2"}
CACHE_SCENARIOS=${CACHE_SCENARIOS:-"S1 S1R"}
S1_TOTAL=${S1_TOTAL:-3000}; S1_CONNS=${S1_CONNS:-32}; S1_DUR=${S1_DUR:-20}
S2_CONNS=${S2_CONNS:-20}; S2_MPC=${S2_MPC:-200}; S2_DUR=${S2_DUR:-60}
S3_CONNS=${S3_CONNS:-4}; S3_MPC=${S3_MPC:-5}; S3_DUR=${S3_DUR:-120}
IDLE_N=${IDLE_N:-2000}; IDLE_HOLD=${IDLE_HOLD:-10}; IDLE_SETUP_MAX=${IDLE_SETUP_MAX:-160}
IDLE_BIG=${IDLE_BIG:-10000}
S5_SIZE=${S5_SIZE:-104857600}
LOG_LEVEL=${LOG_LEVEL:-info}
IDENTITY=${IDENTITY:-header}
SKIP_BUILD=${SKIP_BUILD:-0}; SKIP_INSTALL=${SKIP_INSTALL:-0}
PORT_BASE=${PORT_BASE:-14500}
SINK_PORT=$((PORT_BASE + 25))
declare -A PORT=([saslgate]=$((PORT_BASE + 87)) [saslgate-auto]=$((PORT_BASE + 88))
	[saslgate-ecdsa]=$((PORT_BASE + 89)) [saslgate-pool]=$((PORT_BASE + 86)) [saslgate-cache]=$((PORT_BASE + 85)) [saslgate-alt]=$((PORT_BASE + 84)) [nginx]=$((PORT_BASE + 90)) [direct]=$SINK_PORT)
NGINX_AUTH_PORT=$((PORT_BASE + 80))
LOAD=$BENCH/sgload
SG=$BUILD/saslgate
RES=$OUT/runs.txt

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (cgroups, private daemons, sysctl)"
in_list() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }

# ------------------------------------------------------------ 1. build + packages
if [ "$SKIP_INSTALL" != 1 ] && in_list nginx "$TARGETS" && [ ! -e /usr/lib/nginx/modules/ngx_mail_module.so ]; then
	log "installing nginx + libnginx-mod-mail (Debian packages) for the side-by-side run"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnginx-mod-mail nginx >/dev/null 2>&1 ||
		log "could not install nginx: running without it"
	# the distro instance must not keep port 80 (no systemd here: its init script)
	[ -x /etc/init.d/nginx ] && /etc/init.d/nginx stop >/dev/null 2>&1
fi
if in_list nginx "$TARGETS" && [ ! -e /usr/lib/nginx/modules/ngx_mail_module.so ]; then
	log "no nginx mail module: nginx left out"
	TARGETS=$(echo " $TARGETS " | sed 's/ nginx / /')
fi
command -v smtp-sink >/dev/null || die "smtp-sink (package postfix) missing"
command -v saslpasswd2 >/dev/null || die "saslpasswd2 (package sasl2-bin) missing"
HAVE_SG=0
case " $TARGETS " in *" saslgate"*) HAVE_SG=1 ;; esac
if [ "$SKIP_BUILD" != 1 ] && [ $HAVE_SG = 1 ]; then
	log "building saslgate (Release) in $BUILD and sgload"
	cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSG_TESTS=OFF >/dev/null || die "cmake configure failed"
	cmake --build "$BUILD" -j"$(nproc)" --target saslgate >$WORK.build.log 2>&1 || die "saslgate build failed ($WORK.build.log)"
fi
make -s -C "$BENCH" sgload || die "building sgload failed"
[ $HAVE_SG = 0 ] || [ -x "$SG" ] || die "no saslgate binary at $SG"

# ------------------------------------------------------------ 2. environment
mkdir -p "$OUT" $WORK/tls $WORK/sasl $WORK/sink $WORK/nginx/tmp $WORK/s5
chmod 1777 $WORK/sink $WORK/s5
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# S4X: saslgate holds two descriptors per authenticated session (client +
# upstream); a container may forbid raising the hard limit
NOFILE=$(ulimit -n)
if in_list S4X "$SCENARIOS" && [ $((2 * IDLE_BIG + 200)) -gt "$NOFILE" ]; then
	log "S4X: ulimit -n is $NOFILE (hard limit, cannot be raised here): IDLE_BIG $IDLE_BIG -> $(((NOFILE - 200) / 2))"
	IDLE_BIG=$(((NOFILE - 200) / 2))
fi
OLD_PORTRANGE=$(sysctl -n net.ipv4.ip_local_port_range | tr '\t' ' ')
OLD_TWREUSE=$(sysctl -n net.ipv4.tcp_tw_reuse)
# S1 opens ~2 connections per message: keep TIME_WAIT from exhausting ports
sysctl -q -w net.ipv4.ip_local_port_range="20000 65000"
sysctl -q -w net.ipv4.tcp_tw_reuse=1
for t in direct $TARGETS; do
	ss -Hltn "sport = :${PORT[$t]}" | grep -q . && die "port ${PORT[$t]} in use (PORT_BASE=... to move)"
done

# certificates (self-signed, CN=localhost): RSA-2048 and ECDSA P-256
[ -s $WORK/tls/rsa.key ] || openssl req -x509 -newkey rsa:2048 -nodes -keyout $WORK/tls/rsa.key \
	-out $WORK/tls/rsa.crt -days 3650 -subj /CN=localhost 2>/dev/null || die "openssl req rsa"
[ -s $WORK/tls/ecdsa.key ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout $WORK/tls/ecdsa.key -out $WORK/tls/ecdsa.crt -days 3650 -subj /CN=localhost 2>/dev/null ||
	die "openssl req ecdsa"
chmod 600 $WORK/tls/*.key
# SASL user bench/benchpw in realm saslgate.bench (the realm saslgate is told to use)
rm -f $WORK/sasl/sasldb2
echo benchpw | saslpasswd2 -p -c -f $WORK/sasl/sasldb2 -u saslgate.bench bench || die saslpasswd2
chmod 600 $WORK/sasl/sasldb2

sg_conf() { # name port workers ecdsa(0|1) [pool_size] [cache_size]
	cat <<-EOF
	# saslgate benchmark configuration ($1), written by tests/bench/run.sh
	[server]
	hostname = bench.saslgate.test
	workers = $3
	max_connections = 30000
	shutdown_timeout = 2s
	log_level = $LOG_LEVEL
	[listener bench]
	address = 127.0.0.1:$2
	tls = starttls
	[tls]
	certificate = $WORK/tls/rsa.crt
	key = $WORK/tls/rsa.key
	EOF
	[ "$4" = 1 ] && printf 'ecdsa_certificate = %s\necdsa_key = %s\n' $WORK/tls/ecdsa.crt $WORK/tls/ecdsa.key
	cat <<-EOF
	[sasl]
	realm = saslgate.bench
	failure_delay = 100ms
	pwcheck_method = auxprop
	auxprop_plugin = sasldb
	sasldb_path = $WORK/sasl/sasldb2
	mech_list = PLAIN LOGIN
	cache_size = ${6:-0}
	[upstream]
	server = 127.0.0.1:$SINK_PORT
	identity = $IDENTITY
	pool_size = ${5:-0}
	[limits]
	# S5 sends 100 MiB plus headers
	max_message_size = 128M
	idle_timeout = 10m
	EOF
}
sg_conf saslgate ${PORT[saslgate]} 1 0 >$WORK/saslgate.conf
sg_conf saslgate-auto ${PORT[saslgate-auto]} auto 0 >$WORK/saslgate-auto.conf
sg_conf saslgate-ecdsa ${PORT[saslgate-ecdsa]} 1 1 >$WORK/saslgate-ecdsa.conf
sg_conf saslgate-pool ${PORT[saslgate-pool]} 1 0 8 >$WORK/saslgate-pool.conf
sg_conf saslgate-cache ${PORT[saslgate-cache]} 1 0 0 1000 >$WORK/saslgate-cache.conf
sg_conf saslgate-alt ${PORT[saslgate-alt]} 1 0 >$WORK/saslgate-alt.conf
for t in saslgate saslgate-auto saslgate-ecdsa saslgate-pool saslgate-cache saslgate-alt; do
	in_list $t "$TARGETS" || continue
	"$SG" -t -c $WORK/$t.conf >$OUT/check-$t.txt 2>&1 || die "saslgate -t rejects $WORK/$t.conf: $(head -3 $OUT/check-$t.txt)"
done

# nginx: the shared rig's config, rendered for our paths and ports (RSA cert)
if in_list nginx "$TARGETS"; then
	cp $WORK/tls/rsa.crt $WORK/tls/server.crt && cp $WORK/tls/rsa.key $WORK/tls/server.key
	sed -e "s#@CONF@#$WORK/nginx#g" -e "s#/tmp/saslgate-bench#$WORK#g" \
		-e "s#127.0.0.1:1587#127.0.0.1:${PORT[nginx]}#" -e "s#127.0.0.1:1580#127.0.0.1:$NGINX_AUTH_PORT#g" \
		-e "s#Auth-Port 2525#Auth-Port $SINK_PORT#" \
		"$RIG_CONF/nginx/nginx.conf" >$WORK/nginx/nginx.conf || die "rendering nginx.conf"
	nginx -t -c $WORK/nginx/nginx.conf >$OUT/check-nginx.txt 2>&1 || die "nginx -t: $(tail -2 $OUT/check-nginx.txt)"
fi

# ------------------------------------------------------------ 3. cgroups
if [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
	CG_MODE=v1; CG_ROOT=/sys/fs/cgroup/cpuacct/$(basename "$WORK")
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
	CG_MODE=v2; CG_ROOT=/sys/fs/cgroup/$(basename "$WORK")
else
	die "no cgroup v1 cpuacct nor cgroup v2: needed to measure server CPU"
fi
mkdir -p $CG_ROOT || die "cannot create $CG_ROOT"
cg_create() { mkdir -p $CG_ROOT/$1; }
cg_enter() { echo $BASHPID >$CG_ROOT/$1/cgroup.procs; }
cg_cpu_ns() {
	if [ $CG_MODE = v1 ]; then cat $CG_ROOT/$1/cpuacct.usage
	else awk '$1=="usage_usec"{printf "%d\n", $2*1000}' $CG_ROOT/$1/cpu.stat; fi
}
cg_pids() { cat $CG_ROOT/$1/cgroup.procs 2>/dev/null; }
cg_wait_empty() { # name timeout_s
	local i
	for ((i = 0; i < $2 * 10; i++)); do [ -z "$(cg_pids $1)" ] && return 0; sleep 0.1; done
	return 1
}
cg_kill_left() { # what is left in OUR cgroup is ours: TERM, then KILL, by PID
	local p
	for p in $(cg_pids $1); do kill -TERM $p 2>/dev/null; done
	cg_wait_empty $1 3 && return 0
	for p in $(cg_pids $1); do kill -KILL $p 2>/dev/null; done
	cg_wait_empty $1 3
}
mem_kib() { # "rss_kib pss_kib nprocs" summed over the cgroup
	local pids=$(cg_pids $1)
	[ -z "$pids" ] && { echo "0 0 0"; return; }
	local files=$(for p in $pids; do echo /proc/$p/status /proc/$p/smaps_rollup; done)
	cat $files 2>/dev/null | awk '/^VmRSS:/{r+=$2; n++} /^Pss:/{p+=$2} END{printf "%d %d %d\n", r, p, n}'
}
wait_port() { # port timeout_s
	local i
	for ((i = 0; i < $2 * 10; i++)); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done
	return 1
}
cg_of() { [ "$1" = direct ] && echo sink || echo "$1"; }

# ------------------------------------------------------------ 4. start / stop
SINK_PID=""
start_sink() { # extra smtp-sink args
	cg_create sink
	# -m: S4X holds IDLE_BIG upstream sessions; -t 600: idle relays outlive setup
	(cg_enter sink; exec smtp-sink -u nobody -m $((IDLE_BIG + 2000)) -t 600 "$@" 127.0.0.1:$SINK_PORT 4096) \
		>>$WORK/sink/sink.log 2>&1 &
	SINK_PID=$!
	wait_port $SINK_PORT 10 || die "smtp-sink did not start"
}
stop_sink() {
	[ -n "$SINK_PID" ] && { kill $SINK_PID 2>/dev/null; wait $SINK_PID 2>/dev/null; }
	SINK_PID=""; cg_kill_left sink
}
declare -A SGPID=()
start_sg() { # target
	cg_create $1
	local bin=$SG
	[ "$1" = saslgate-alt ] && bin=${ALT_BIN:?saslgate-alt needs ALT_BIN}
	(cg_enter $1; exec "$bin" -c $WORK/$1.conf) >>$OUT/$1.log 2>&1 &
	SGPID[$1]=$!
	wait_port ${PORT[$1]} 10 || die "$1 not listening on ${PORT[$1]} (see $OUT/$1.log)"
}
stop_sg() {
	local p=${SGPID[$1]:-}
	[ -n "$p" ] && { kill -TERM $p 2>/dev/null; wait $p 2>/dev/null; }
	SGPID[$1]=""; cg_wait_empty $1 10 || cg_kill_left $1
}
start_nginx() {
	cg_create nginx
	(cg_enter nginx; exec nginx -c $WORK/nginx/nginx.conf) || die "nginx start failed"
	wait_port ${PORT[nginx]} 10 || die "nginx not listening"
}
stop_nginx() {
	[ -s $WORK/nginx/nginx.pid ] && kill -TERM "$(cat $WORK/nginx/nginx.pid)" 2>/dev/null
	cg_wait_empty nginx 10 || cg_kill_left nginx
}
start_t() { case $1 in nginx) start_nginx ;; direct) : ;; *) start_sg $1 ;; esac; }
stop_t() { case $1 in nginx) stop_nginx ;; direct) : ;; *) stop_sg $1 ;; esac; }

STARTED=""
S5_SAMPLER=""
cleanup() {
	local t
	[ -n "$S5_SAMPLER" ] && kill $S5_SAMPLER 2>/dev/null
	for t in $STARTED; do stop_t $t; done
	stop_sink
	for t in sink $TARGETS; do rmdir $CG_ROOT/$t 2>/dev/null; done
	rmdir $CG_ROOT 2>/dev/null
	sysctl -q -w net.ipv4.ip_local_port_range="$OLD_PORTRANGE"
	sysctl -q -w net.ipv4.tcp_tw_reuse="$OLD_TWREUSE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ 5. start + verify
{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "host: $(uname -r), $(nproc) cpus,$(awk -F: '/model name/{print $2; exit}' /proc/cpuinfo)"
	echo "versions: $([ $HAVE_SG = 1 ] && "$SG" -V 2>&1) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)) / $(nginx -v 2>&1 | sed 's/.*: //') / postfix $(postconf -h mail_version 2>/dev/null) / $(openssl version)"
	echo "reps=$REPS targets=$TARGETS scenarios=$SCENARIOS cgroup=$CG_MODE identity=$IDENTITY nofile=$NOFILE idle_n=$IDLE_N idle_big=$IDLE_BIG"
} >$OUT/meta.txt
log "results -> $OUT ($(sed -n 2p $OUT/meta.txt))"
start_sink
for t in $TARGETS; do start_t $t; STARTED="$STARTED $t"; done
for t in $TARGETS; do
	[ $t = direct ] && continue
	if $LOAD --port ${PORT[$t]} --tls starttls --auth bench:benchpw --total 2 --timeout 10 --duration 10 \
		>$OUT/verify-$t.txt 2>&1; then
		log "verify $t: STARTTLS + AUTH PLAIN + 2 messages ok"
	else
		log "verify $t: FAILED: $(tail -2 $OUT/verify-$t.txt | tr '\n' ' ')"
		[ "$t" = nginx ] || die "$t does not relay a message; nothing to measure"
	fi
	if $LOAD --port ${PORT[$t]} --tls starttls --auth bench:WRONG --total 1 --timeout 10 --duration 10 \
		>>$OUT/verify-$t.txt 2>&1; then
		log "verify $t: wrong password ACCEPTED$([ $t = nginx ] && echo ' (expected: nginx auth_http stub says yes to all)')"
	else
		log "verify $t: wrong password rejected"
	fi
done

# ------------------------------------------------------------ 6. scenarios
scen_args() {
	case $1 in
	S1) echo "--conns $S1_CONNS --msgs-per-conn 1 --total $S1_TOTAL --size 4096 --duration $S1_DUR" ;;
	S1R) echo "--conns $S1_CONNS --msgs-per-conn 1 --total $S1_TOTAL --size 4096 --duration $S1_DUR --resume" ;;
	S2) echo "--conns $S2_CONNS --msgs-per-conn $S2_MPC --total $((S2_CONNS * S2_MPC)) --size 4096 --duration $S2_DUR" ;;
	S3) echo "--conns $S3_CONNS --msgs-per-conn $S3_MPC --total $((S3_CONNS * S3_MPC)) --size 10485760 --duration $S3_DUR" ;;
	esac
}
tls_args() { [ "$1" = direct ] && echo "--tls none" || echo "--tls starttls --auth bench:benchpw"; }
kv() { echo "$2" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k{print $2; exit}'; }
wants() { # target scenario
	case $1 in
	saslgate-auto) in_list $2 "$AUTO_SCENARIOS" ;;
	saslgate-ecdsa) in_list $2 "$ECDSA_SCENARIOS" ;;
	saslgate-pool) in_list $2 "$POOL_SCENARIOS" ;;
	saslgate-cache) in_list $2 "$CACHE_SCENARIOS" ;;
	saslgate-alt) [ $2 != S4X ] && [ $2 != S5 ] ;;
	nginx | direct) [ $2 != S4X ] && [ $2 != S5 ] ;;
	*) return 0 ;;
	esac
}

run_load() { # target scenario rep
	local t=$1 s=$2 r=$3 cg=$(cg_of $1)
	sleep 1
	local c0=$(cg_cpu_ns $cg) line
	line=$($LOAD --port ${PORT[$t]} $(tls_args $t) $(scen_args $s) --timeout 30 2>>$OUT/sgload-$t-$s.err | tail -1)
	local c1=$(cg_cpu_ns $cg)
	local ok=$(kv ok "$line")
	local o="target=$t scen=$s rep=$r load1=$(cut -d' ' -f1 /proc/loadavg) $line $(awk -v c0=$c0 -v c1=$c1 -v ok=${ok:-0} -v lg=$(kv loadgen_cpu_s "$line") \
		'BEGIN{srv=(c1-c0)/1e9; printf "srv_cpu_s=%.3f srv_ms_per_msg=%.4f lg_ms_per_msg=%.4f", srv, ok?srv*1000/ok:0, ok?lg*1000/ok:0}')"
	echo "$o" >>$RES
	log "$t $s rep$r: $(echo " $o" | grep -o -E ' (ok|fail|msgs_per_s|p50_ms|p99_ms|MBps|srv_ms_per_msg)=[^ ]+' | tr -d '\n')"
}

run_idle() { # target rep scenario count
	local t=$1 r=$2 s=$3 n=$4 cg=$(cg_of $1)
	# a fresh server: the baseline must not carry earlier scenarios' state
	stop_t $t; start_t $t
	sleep 2
	local m0=$(mem_kib $cg) tmp=$OUT/idle-$t-$s-$r.out
	$LOAD --port ${PORT[$t]} $(tls_args $t) --idle $n --hold $IDLE_HOLD --conns 32 \
		--duration $IDLE_SETUP_MAX --timeout 30 >$tmp 2>>$OUT/sgload-$t-$s.err &
	local lp=$! i
	for ((i = 0; i < (IDLE_SETUP_MAX + 70) * 10; i++)); do
		grep -q idle_ready $tmp 2>/dev/null && break
		kill -0 $lp 2>/dev/null || break
		sleep 0.1
	done
	# sample while they are held: min(hold/2, 3 s) after all are up
	sleep $(awk -v h=$IDLE_HOLD 'BEGIN{x=h/2; if (x>3) x=3; print x}')
	local m1=$(mem_kib $cg)
	wait $lp
	local fin=$(tail -1 $tmp)
	local o="target=$t scen=$s rep=$r $fin $(awk -v m0="$m0" -v m1="$m1" -v est=$(kv established "$fin") 'BEGIN{
		split(m0,a," "); split(m1,b," "); e=est?est:1;
		printf "rss0_kib=%d rss1_kib=%d pss0_kib=%d pss1_kib=%d rss_kib_per_conn=%.1f pss_kib_per_conn=%.1f",
			a[1], b[1], a[2], b[2], (b[1]-a[1])/e, (b[2]-a[2])/e}')"
	echo "$o" >>$RES
	log "$t $s rep$r: $(echo " $o" | grep -o -E ' (established|alive_after_hold|setup_secs|rss_kib_per_conn|pss_kib_per_conn)=[^ ]+' | tr -d '\n')"
}

# S5: one S5_SIZE message through saslgate; the sink dumps it (smtp-sink -d
# stores lines with LF ends and adds one newline after the message): the dump
# must end with exactly the message sent (CRLF -> LF), after saslgate's
# Received: header; saslgate's RSS is sampled every 20 ms while it passes.
run_s5() {
	local t=saslgate cg=saslgate
	rm -rf $WORK/s5/dump $WORK/s5/sent.eml
	stop_sink; start_sink -d $WORK/s5/dump/%H%M%S.
	stop_t $t; start_t $t
	# warm up: one small message so TLS, SASL and upstream set-up are in the baseline
	$LOAD --port ${PORT[$t]} $(tls_args $t) --total 1 --size 4096 >/dev/null 2>&1
	sleep 1
	local base=$(mem_kib $cg | cut -d' ' -f1)
	(
		max=0
		while :; do
			v=$(mem_kib $cg | cut -d' ' -f1)
			[ "$v" -gt "$max" ] && { max=$v; echo $max >$WORK/s5/rss.max; }
			sleep 0.02
		done
	) &
	S5_SAMPLER=$!
	local line
	line=$($LOAD --port ${PORT[$t]} $(tls_args $t) --total 1 --size $S5_SIZE --timeout 60 --duration 120 \
		--dump-msg $WORK/s5/sent.eml 2>>$OUT/sgload-$t-S5.err | tail -1)
	sleep 0.2
	kill $S5_SAMPLER 2>/dev/null; wait $S5_SAMPLER 2>/dev/null; S5_SAMPLER=""
	local peak=$(cat $WORK/s5/rss.max 2>/dev/null || echo 0)
	local hwm=$(awk '/^VmHWM:/{print $2}' /proc/${SGPID[$t]}/status 2>/dev/null)
	sleep 1
	local dump=$(ls -S $WORK/s5/dump/* 2>/dev/null | head -1) exact=no sent_sha= got_sha=
	if [ -n "$dump" ]; then
		local want=$(tr -d '\r' <$WORK/s5/sent.eml | wc -c)
		sent_sha=$(tr -d '\r' <$WORK/s5/sent.eml | sha256sum | cut -c1-16)
		# smtp-sink ends each dumped message with one more newline
		got_sha=$(tail -c $((want + 1)) "$dump" | head -c $want | sha256sum | cut -c1-16)
		[ "$sent_sha" = "$got_sha" ] && exact=yes
	fi
	local o="target=$t scen=S5 rep=1 $line rss_base_kib=$base rss_peak_kib=$peak vmhwm_kib=${hwm:-0} msg_bytes=$S5_SIZE rss_growth_kib=$((peak - base)) byte_exact=$exact sent_sha256=$sent_sha upstream_sha256=$got_sha"
	echo "$o" >>$RES
	log "saslgate S5: $(echo " $o" | grep -o -E ' (ok|MBps|rss_base_kib|rss_peak_kib|rss_growth_kib|byte_exact)=[^ ]+' | tr -d '\n')"
	rm -rf $WORK/s5/dump $WORK/s5/sent.eml
	stop_sink; start_sink
}

tlist=($TARGETS)
for ((rep = 1; rep <= REPS; rep++)); do
	if [ $rep -gt 1 ]; then
		log "rep $rep: fresh targets"
		for t in $TARGETS; do stop_t $t; start_t $t; done
		stop_sink; start_sink
	fi
	order=""
	for ((i = 0; i < ${#tlist[@]}; i++)); do order="$order ${tlist[$(((i + rep - 1) % ${#tlist[@]}))]}"; done
	for s in $SCENARIOS; do
		for t in $order; do
			wants $t $s || continue
			case $s in
			S4) run_idle $t $rep S4 $IDLE_N ;;
			S4X) [ $rep = 1 ] && run_idle $t 1 S4X $IDLE_BIG ;;
			S5) [ $rep = 1 ] && run_s5 ;;
			*) run_load $t $s $rep ;;
			esac
		done
	done
done

# ------------------------------------------------------------ 7. profile (optional, not counted)
# PROFILE=1: one more run of each PROFILE_SCENARIOS for target saslgate under
# `perf record -e cpu-clock` (flat profile: a Release build has no frame
# pointers); the top of `perf report` goes to OUT/profile-<scen>.txt.
if [ "${PROFILE:-0}" = 1 ] && in_list saslgate "$TARGETS" && command -v perf >/dev/null; then
	for s in ${PROFILE_SCENARIOS:-S1 S2 S3}; do
		stop_t saslgate; start_t saslgate; sleep 1
		perf record -q -e cpu-clock -F 4000 -p ${SGPID[saslgate]} -o $OUT/perf-$s.data >/dev/null 2>&1 &
		pp=$!
		sleep 1
		$LOAD --port ${PORT[saslgate]} $(tls_args saslgate) $(scen_args $s) --timeout 30 >/dev/null 2>&1
		kill -INT $pp 2>/dev/null; wait $pp 2>/dev/null
		{
			perf report -i $OUT/perf-$s.data --stdio --no-children --sort dso 2>/dev/null |
				grep -v '^#' | grep -v '^$' | head -8
			echo
			perf report -i $OUT/perf-$s.data --stdio --no-children --sort dso,symbol 2>/dev/null |
				grep -v '^#' | grep -v '^$' | head -40
		} >$OUT/profile-$s.txt
		log "profile $s: $OUT/profile-$s.txt (top: $(head -3 $OUT/profile-$s.txt | awk '{print $1, $NF}' | tr '\n' ' '))"
	done
fi

# ------------------------------------------------------------ 8. table
{
	echo "# saslgate benchmark: medians of $REPS runs [min..max]"
	echo "# $(sed -n 1p $OUT/meta.txt); $(sed -n 2p $OUT/meta.txt)"
	echo "# $(sed -n 3p $OUT/meta.txt)"
	echo "# box load average (1 min) during the load runs: $(grep -o 'load1=[0-9.]*' $RES | cut -d= -f2 | sort -n | sed -n '1p;$p' | tr '\n' ' ' | sed 's/ $//; s/ /../') (2 cores; above ~2 other work competed with the runs)"
	echo
	awk -f "$BENCH/summarize.awk" $RES
} | tee $OUT/table.md
log "raw runs: $RES"
