#!/usr/bin/env bash
# Installs the system packages the test harness needs, with apt-get, if missing:
#   - PostgreSQL 15 server binaries (/usr/lib/postgresql/15/bin: initdb, pg_ctl, postgres, pg_basebackup)
#   - pgbouncer
#   - openssl (certificates for the throwaway clusters)
# Idempotent: a fast no-op when everything is present. When not root and something
# is missing it prints what is missing and exits 0 (the harness then reports it).
# Set ENSURE_DEPS_STRICT=1 to exit 1 instead in that case.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
PG_BINDIR="${PG_BINDIR:-/usr/lib/postgresql/${PG_MAJOR}/bin}"

have_pg() {
  local b
  for b in initdb pg_ctl postgres pg_basebackup; do
    [ -x "${PG_BINDIR}/${b}" ] || return 1
  done
}
have_pgbouncer() { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }
have_openssl() { command -v openssl >/dev/null 2>&1; }
have_runuser() { command -v runuser >/dev/null 2>&1; }

missing=()
have_pg || missing+=("postgresql-${PG_MAJOR}")
have_pgbouncer || missing+=("pgbouncer")
have_openssl || missing+=("openssl")
if [ "$(id -u)" = 0 ] && ! have_runuser; then missing+=("util-linux"); fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "ensure-deps: missing ${missing[*]} but not running as root; skipping installation." >&2
  echo "ensure-deps: install them with: sudo apt-get install -y ${missing[*]}" >&2
  [ "${ENSURE_DEPS_STRICT:-0}" = 1 ] && exit 1
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-deps: missing ${missing[*]} and apt-get is not available." >&2
  exit 1
fi

echo "ensure-deps: installing ${missing[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive

# Don't let package post-install scripts start system services (a stock cluster on 5432,
# a pgbouncer on 6432): the harness runs its own throwaway servers. Only when the
# machine has no policy of its own.
cleanup_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  cleanup_policy=1
fi
# ...and don't create the stock "main" cluster at all (it would occupy disk and 5432).
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  mkdir -p /etc/postgresql-common
  echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
fi
trap 'if [ "$cleanup_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT

apt-get update -qq

pkgs=()
for p in "${missing[@]}"; do
  if [ "$p" = "postgresql-${PG_MAJOR}" ]; then
    # Debian bookworm ships postgresql-15; elsewhere "postgresql" may be 15 too.
    cand="$(apt-cache policy "postgresql-${PG_MAJOR}" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [ -n "$cand" ] && [ "$cand" != "(none)" ]; then
      pkgs+=("postgresql-${PG_MAJOR}")
    else
      meta="$(apt-cache policy postgresql 2>/dev/null | awk '/Candidate:/ {print $2}')"
      case "$meta" in
        "${PG_MAJOR}"+*|"${PG_MAJOR}".*) pkgs+=("postgresql") ;;
        *)
          echo "ensure-deps: no PostgreSQL ${PG_MAJOR} package in the configured apt sources (postgresql candidate: ${meta:-none})." >&2
          exit 1 ;;
      esac
    fi
  else
    pkgs+=("$p")
  fi
done

apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${pkgs[@]}" >/dev/null

# A stock pgbouncer service may still have been started by a machine without policy-rc.d
# handling; it is not ours to stop, but tell the user.
if ! have_pg || ! have_pgbouncer || ! have_openssl; then
  echo "ensure-deps: installation finished but something is still missing." >&2
  exit 1
fi
echo "ensure-deps: done." >&2
