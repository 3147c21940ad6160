#!/bin/sh
# One member of the OVN NB or SB raft cluster (ovn-central.yaml): `raft-db.sh nb|sb`.
# Member 0 of the StatefulSet creates the cluster; the others join it through every other
# member's address. A database file that exists is just served again (a restart keeps the
# member's identity and log). Env: POD_NAME (ordinal), POD_IP (this member's address; host
# network, so the node's stable InternalIP), OVN_CENTRAL_IPS (all members, space separated).
set -eu
case "${1:-}" in
  nb) name=OVN_Northbound; client=6641; raft=6643 ;;
  sb) name=OVN_Southbound; client=6642; raft=6644 ;;
  *) echo "usage: $0 nb|sb" >&2; exit 2 ;;
esac
db=$1
schema=${OVN_SCHEMA_DIR:-/usr/share/ovn}/ovn-$db.ovsschema
dir=${OVN_DB_DIR:-/var/lib/ovn}
run=${OVN_RUNDIR:-/var/run/ovn}
file=$dir/ovn${db}_db.db
self=tcp:$POD_IP:$raft
mkdir -p "$dir" "$run"
if [ ! -e "$file" ]; then
  if [ "${POD_NAME##*-}" = 0 ]; then
    echo "raft-db: creating the $name cluster at $self"
    ovsdb-tool create-cluster "$file" "$schema" "$self"
  else
    remotes=""
    for ip in $OVN_CENTRAL_IPS; do
      [ "$ip" = "$POD_IP" ] || remotes="$remotes tcp:$ip:$raft"
    done
    echo "raft-db: joining the $name cluster at$remotes as $self"
    # shellcheck disable=SC2086 # one argument per remote
    ovsdb-tool join-cluster "$file" "$name" "$self" $remotes
  fi
fi
exec ovsdb-server "$file" \
  --remote="ptcp:$client:$POD_IP" --remote="punix:$run/ovn${db}_db.sock" \
  --unixctl="$run/ovn${db}_db.ctl" --pidfile="$run/ovn${db}_db.pid" \
  -vconsole:info -vfile:off
