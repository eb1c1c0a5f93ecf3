#!/usr/bin/env bash
# PostgreSQL server binaries for the tests (a throwaway cluster per test session; see
# tests/pg_cluster.py). Installs Debian's postgresql package when initdb is missing and this
# runs as root (CI); otherwise says what to install. Never starts or touches a system cluster.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing PostgreSQL (Debian's postgresql package) for the database tests" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # the package may start its own cluster: the tests never use it
  exit 0
fi
echo "PostgreSQL server binaries not found: install them (Debian: apt-get install postgresql)" >&2
echo "or the database tests will be skipped" >&2
