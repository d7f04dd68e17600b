#!/usr/bin/env bash
# A private PC/SC stack: pcscd with its own vpcd reader on a non-default port (docs/pcsc.md).
#
#   scripts/pcsc-stack.sh [-p PORT] [-n NAME] [-d] [--no-unshare] [COMMAND [ARG...]]
#
# Starts `pcscd --foreground -c DIR` with one vpcd entry (readers "NAME 00 00" on PORT and
# "NAME 00 01" on PORT+1), waits until it is ready, prints the reader names, then
#   * with COMMAND: runs it (with CAPSIM_VPCD=127.0.0.1:PORT and CAPSIM_READER="NAME 00 00"
#     in its environment) and exits with its status;
#   * without: waits until Ctrl-C.
# pcscd is always stopped by its PID (TERM, then wait) on exit.
#
# Only one pcscd can run per mount namespace. With COMMAND, as root (unless --no-unshare),
# the script re-runs itself inside `unshare --mount --net` with a private loopback and a
# private /run/pcscd, so a system pcscd is neither disturbed nor visible; COMMAND runs in
# there. Otherwise the stack runs in the current namespace (vpcd listens on 0.0.0.0:PORT
# and PORT+1), and an already running pcscd is an error.
#
# Example:
#   scripts/pcsc-stack.sh bash -c 'capsim card serve card.json --vpcd "$CAPSIM_VPCD" &
#       sleep 1; opensc-tool -l; capsim code respond --reader "pcsc:$CAPSIM_READER" --challenge 1234'
set -euo pipefail

PORT=40000
NAME="CAPSIM Virtual"
DEBUG=()
UNSHARE=1
DRIVER=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
RUN_DIR=/run/pcscd

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    -p|--port) PORT=$2; shift 2 ;;
    -n|--name) NAME=$2; shift 2 ;;
    -d|--debug) DEBUG=(-d -a); shift ;;
    --no-unshare) UNSHARE=0; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    -*) echo "pcsc-stack: unknown option $1" >&2; usage 2 ;;
    *) break ;;
  esac
done

case "$PORT" in (*[!0-9]*|'') echo "pcsc-stack: --port must be a number" >&2; exit 2 ;; esac
if [ "$PORT" -lt 1024 ] || [ "$PORT" -gt 65534 ]; then
  echo "pcsc-stack: --port must be 1024..65534 (slot 1 uses PORT+1)" >&2; exit 2
fi
PCSCD=$(command -v pcscd || true)
[ -n "$PCSCD" ] || { [ -x /usr/sbin/pcscd ] && PCSCD=/usr/sbin/pcscd; } || true
if [ -z "$PCSCD" ]; then
  echo "pcsc-stack: pcscd is not installed (apt-get install pcscd)" >&2; exit 1
fi
if [ ! -e "$DRIVER" ]; then
  echo "pcsc-stack: the vpcd driver $DRIVER is missing (apt-get install vsmartcard-vpcd)" >&2; exit 1
fi

# Re-run inside a private mount + network namespace when we can.
if [ $# -gt 0 ] && [ "$UNSHARE" = 1 ] && [ -z "${CAPSIM_PCSC_STACK_NS:-}" ] && [ "$(id -u)" = 0 ] \
   && command -v unshare >/dev/null; then
  mkdir -p "$RUN_DIR"
  export CAPSIM_PCSC_STACK_NS=1
  exec unshare --mount --net --fork bash -c '
    ip link set lo up
    mount -t tmpfs tmpfs /run/pcscd
    exec "$0" "$@"' "$0" --port "$PORT" --name "$NAME" ${DEBUG[@]+"${DEBUG[@]}"} -- "$@"
fi

if [ -e "$RUN_DIR/pcscd.pid" ]; then
  OTHER=$(tr -d '\0' < "$RUN_DIR/pcscd.pid" 2>/dev/null || true)
  if [ -n "$OTHER" ] && kill -0 "$OTHER" 2>/dev/null; then
    echo "pcsc-stack: a pcscd (pid $OTHER) already runs here; stop it, or run this script as root" \
         "(private namespace), or serve to its own vpcd entry: capsim card serve CARD.json" >&2
    exit 1
  fi
fi

CONF=$(mktemp -d "${TMPDIR:-/tmp}/capsim-pcsc.XXXXXX")
cat > "$CONF/capsim-vpcd" <<EOF
FRIENDLYNAME "$NAME"
DEVICENAME   /dev/null:$PORT
LIBPATH      $DRIVER
CHANNELID    $PORT
EOF

PCSCD_PID=
cleanup() {
  if [ -n "$PCSCD_PID" ] && kill -0 "$PCSCD_PID" 2>/dev/null; then
    kill -TERM "$PCSCD_PID" 2>/dev/null || true
    wait "$PCSCD_PID" 2>/dev/null || true
  fi
  rm -rf "$CONF"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$PCSCD" --foreground ${DEBUG[@]+"${DEBUG[@]}"} -c "$CONF" > "$CONF/pcscd.log" 2>&1 &
PCSCD_PID=$!

for _ in $(seq 500); do
  [ -S "$RUN_DIR/pcscd.comm" ] && break
  if ! kill -0 "$PCSCD_PID" 2>/dev/null; then
    echo "pcsc-stack: pcscd exited:" >&2; cat "$CONF/pcscd.log" >&2; exit 1
  fi
  sleep 0.01
done
if [ ! -S "$RUN_DIR/pcscd.comm" ]; then
  echo "pcsc-stack: pcscd did not become ready" >&2; cat "$CONF/pcscd.log" >&2; exit 1
fi

echo "pcsc-stack: pcscd pid $PCSCD_PID, log $CONF/pcscd.log" >&2
echo "pcsc-stack: reader \"$NAME 00 00\": serve a card with: capsim card serve CARD.json --vpcd 127.0.0.1:$PORT" >&2
echo "pcsc-stack: reader \"$NAME 00 01\": serve a card with: capsim card serve CARD.json --vpcd 127.0.0.1:$PORT --slot 1" >&2
echo "$NAME 00 00"
echo "$NAME 00 01"

export CAPSIM_VPCD="127.0.0.1:$PORT" CAPSIM_READER="$NAME 00 00"
if [ $# -gt 0 ]; then
  set +e
  "$@"
  STATUS=$?
  set -e
  exit "$STATUS"
fi
echo "pcsc-stack: running; Ctrl-C stops pcscd" >&2
wait "$PCSCD_PID"
