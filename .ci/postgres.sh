#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite: a fresh cluster in a temp dir, on a free loopback
# port, as a non-root user (initdb refuses root), with durability off (it is thrown away).
#
#   bash .ci/postgres.sh start ENV_FILE   start it; write the exports below into ENV_FILE
#   bash .ci/postgres.sh stop ENV_FILE    stop it and delete its files
#
# ENV_FILE gets `export SPECKLAB_TEST_POSTGRES_URL=postgresql+psycopg://...` (what the tests
# read) and `export SPECKLAB_TEST_POSTGRES_DIR=...` (what `stop` needs). A caller:
#
#   bash .ci/postgres.sh start /tmp/pg.env
#   trap 'bash .ci/postgres.sh stop /tmp/pg.env' EXIT
#   source /tmp/pg.env
set -euo pipefail

action=${1:-}
env_file=${2:-}
if [[ -z $action || -z $env_file ]]; then
  echo "usage: $0 start|stop ENV_FILE" >&2
  exit 2
fi

find_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x $dir/initdb ]] && { echo "$dir"; return 0; }
  done
  return 1
}

# Runs a command as the cluster's owner: ourselves, or a system user when we are root.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u "$owner" -- "$@"
  else
    "$@"
  fi
}

pick_owner() {
  owner=$(id -un)
  if [[ $(id -u) -eq 0 ]]; then
    owner=postgres
    id -u "$owner" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$owner"
  fi
}

start() {
  local bin dir port url
  if ! bin=$(find_bin); then
    [[ $(id -u) -eq 0 ]] || { echo "PostgreSQL is not installed (run as root to install)" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
    bin=$(find_bin)
  fi
  pick_owner
  dir=$(mktemp -d "${TMPDIR:-/tmp}/specklab-pg.XXXXXX")
  chmod 755 "$dir"
  chown "$owner" "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$bin/initdb" -D "$dir/data" -U specklab --auth=trust --encoding=UTF8 --no-sync >"$dir/initdb.log"
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
    "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    >/dev/null
  as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U specklab specklab_test
  url="postgresql+psycopg://specklab@127.0.0.1:$port/specklab_test"
  {
    echo "export SPECKLAB_TEST_POSTGRES_URL=$url"
    echo "export SPECKLAB_TEST_POSTGRES_DIR=$dir"
  } >"$env_file"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') running at $url"
}

stop() {
  local bin dir
  [[ -f $env_file ]] || return 0
  dir=$(sed -n 's/^export SPECKLAB_TEST_POSTGRES_DIR=//p' "$env_file")
  [[ -n $dir && -d $dir/data ]] || return 0
  bin=$(find_bin)
  pick_owner
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  rm -rf "$dir" "$env_file"
}

case $action in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop ENV_FILE" >&2; exit 2 ;;
esac
