#!/usr/bin/env bash
# The whole capsim test suite on a fresh Debian machine:
#   1. installs the system packages the tests need (pcscd, the vpcd driver, opensc, PostgreSQL,
#      PgBouncer, SoftHSM2) when running as root and they are missing;
#   2. creates .venv and installs capsim with every extra and the test tools;
#   3. runs ruff, mypy --strict and pytest (PC/SC tests inside a private network and
#      mount namespace when running as root, so they never touch a host pcscd).
# Usage: scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

APT_PACKAGES=(strace pcscd libpcsclite-dev vsmartcard-vpcd pcsc-tools opensc postgresql pgbouncer softhsm2 iproute2 util-linux gcc python3-dev)
need_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "test.sh: not root, cannot install ${need_apt[*]}; the tests that need them will be skipped" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[pcsc,fast,postgres,pkcs11,service,fuzz,test]"

echo "== ruff"
.venv/bin/ruff check capsim tests benchmarks vectors scripts
echo "== mypy --strict"
.venv/bin/mypy --strict capsim
echo "== pytest"
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -z "${CAPSIM_NO_UNSHARE:-}" ]; then
  # A private loopback and a private /run/pcscd: the test pcscd and its vpcd port are invisible
  # to the host, and a host pcscd cannot disturb the tests.
  mkdir -p /run/pcscd
  exec unshare --mount --net --fork bash -c '
    ip link set lo up
    mount -t tmpfs tmpfs /run/pcscd
    exec .venv/bin/python -m pytest "$@"' bash "$@"
else
  exec .venv/bin/python -m pytest "$@"
fi
