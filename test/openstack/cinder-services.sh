#!/usr/bin/env bash
# Debian's real Cinder (api, scheduler, volume) with RabbitMQ and MariaDB as plain processes
# on loopback, noauth, the sharedlvm driver loaded from openstack/ (one backend "sharedlvm",
# one pool per VolumeGroup). Used by test/openstack/run-cinder.sh.
#   cinder-services.sh start WORKDIR KUBECONFIG NODE   (NODE: the node cinder-volume runs on)
#   cinder-services.sh stop WORKDIR
# GLANCE=1 also starts Debian's glance-api (file store, no auth) on 127.0.0.1:9292.
# CINDER_VOLUME=0 starts everything but cinder-volume, which then runs elsewhere (the storage
# tier runs it in a bed VM) with WORKDIR/cinder.conf; it waits for nothing but the API.
set -euo pipefail
cmd=$1 W=$2
repo=$(cd "$(dirname "$0")/../.." && pwd)

stop() {
  cd "$W" 2>/dev/null || return 0
  for s in api scheduler volume glance; do [[ -f $s.pid ]] && kill -TERM "$(cat $s.pid)" 2>/dev/null || true; done
  for _ in $(seq 1 60); do
    alive=0
    for s in api scheduler volume; do [[ -f $s.pid ]] && kill -0 "$(cat $s.pid)" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.5
  done
  for s in api scheduler volume glance; do [[ -f $s.pid ]] && pkill -KILL -s "$(cat $s.pid)" 2>/dev/null || true; done
  [[ -f mariadb.pid ]] && kill -TERM "$(cat mariadb.pid)" 2>/dev/null || true
  runuser -u rabbitmq -- env RABBITMQ_NODENAME=rabbit@localhost rabbitmqctl -n rabbit@localhost stop >/dev/null 2>&1 || true
  epmd -kill >/dev/null 2>&1 || true
  rm -f api.pid scheduler.pid volume.pid glance.pid mariadb.pid rabbit.pid
}

# Debian's glance-api on loopback with a file store and no auth (paste flavor "": the
# unauthenticated-context pipeline), for Cinder's image <-> volume copies.
start_glance() {
  mkdir -p "$W"/glance/{images,staging,tasks}
  mariadb -e "DROP DATABASE IF EXISTS glance; CREATE DATABASE glance;
    CREATE USER IF NOT EXISTS 'glance'@'127.0.0.1' IDENTIFIED BY 'glance';
    GRANT ALL ON glance.* TO 'glance'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat > glance-api.conf <<CONF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9292
workers = 1
log_file = $W/logs/glance-api.log
enabled_backends = file:file
[database]
connection = mysql+pymysql://glance:glance@127.0.0.1/glance?charset=utf8
[glance_store]
default_backend = file
[file]
filesystem_store_datadir = $W/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $W/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $W/glance/tasks
[paste_deploy]
flavor =
config_file = /etc/glance/glance-api-paste.ini
[oslo_policy]
enforce_new_defaults = false
CONF
  /usr/bin/glance-manage --config-file glance-api.conf db_sync > logs/glance-dbsync.out 2>&1 || { tail logs/glance-dbsync.out; return 1; }
  setsid /usr/bin/glance-api --config-file "$W/glance-api.conf" > logs/glance.stdout 2>&1 &
  echo $! > glance.pid
}

start() {
  local kubeconfig=$3 node=$4
  mkdir -p "$W"/{logs,state,locks}
  cd "$W"
  export ERL_EPMD_ADDRESS=127.0.0.1
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_DIST_PORT=25672 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    setsid runuser -u rabbitmq -- /usr/lib/rabbitmq/bin/rabbitmq-server > logs/rabbitmq.out 2>&1 &
  echo $! > rabbit.pid
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql > logs/mariadb-install.out 2>&1
  setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --port=3306 --skip-name-resolve \
    --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=2 > logs/mariadb.out 2>&1 &
  echo $! > mariadb.pid
  local ok=0
  for _ in $(seq 1 480); do
    if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && mariadb-admin ping > /dev/null 2>&1; then ok=1; break; fi
    sleep 0.25
  done
  [[ $ok == 1 ]] || { tail -20 logs/rabbitmq.out logs/mariadb.out; echo "rabbitmq/mariadb did not start in 120 s" >&2; return 1; }
  mariadb -e "DROP DATABASE IF EXISTS cinder; CREATE DATABASE cinder;
    CREATE USER IF NOT EXISTS 'cinder'@'127.0.0.1' IDENTIFIED BY 'cinder';
    GRANT ALL ON cinder.* TO 'cinder'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat > cinder.conf <<CONF
[DEFAULT]
debug = true
log_dir = $W/logs
state_path = $W/state
host = e2e-cinder
my_ip = 127.0.0.1
auth_strategy = noauth
transport_url = rabbit://guest:guest@127.0.0.1:5672/
api_paste_config = /etc/cinder/api-paste.ini
rootwrap_config = /etc/cinder/rootwrap.conf
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = 8776
osapi_volume_workers = 1
enabled_backends = sharedlvm
default_volume_type = __DEFAULT__
glance_api_servers = http://127.0.0.1:9292
allowed_direct_url_schemes =
periodic_interval = 10
report_interval = 5
service_down_time = ${SERVICE_DOWN_TIME:-30}
backend_stats_polling_interval = 10
rpc_response_timeout = ${RPC_TIMEOUT:-60}

[database]
connection = mysql+pymysql://cinder:cinder@127.0.0.1/cinder?charset=utf8

[oslo_concurrency]
lock_path = $W/locks
[coordination]
backend_url = file://$W/state/coord
[oslo_messaging_notifications]
driver = noop

[sharedlvm]
volume_driver = sharedlvm_cinder.driver.SharedLVMDriver
volume_backend_name = sharedlvm
sharedlvm_kubeconfig = $kubeconfig
sharedlvm_namespace = openstack
sharedlvm_volume_groups = cinder-ssd,cinder-hdd
sharedlvm_node_name = $node
sharedlvm_attach_timeout = 50
sharedlvm_volume_timeout = 120
CONF
  /usr/bin/cinder-manage --config-file cinder.conf db sync > logs/dbsync.out 2>&1 || { tail logs/dbsync.out; return 1; }
  if [[ ${GLANCE:-0} == 1 ]]; then start_glance || return 1; fi
  export PYTHONPATH=$repo/openstack
  local services=(api scheduler volume)
  [[ ${CINDER_VOLUME:-1} == 0 ]] && services=(api scheduler)
  for s in "${services[@]}"; do
    setsid /usr/bin/cinder-$s --config-file "$W/cinder.conf" > logs/$s.stdout 2>&1 &
    echo $! > $s.pid
  done
  if [[ ${CINDER_VOLUME:-1} == 0 ]]; then
    for _ in $(seq 1 240); do
      curl -sf -H 'X-Auth-Token: admin:admin' http://127.0.0.1:8776/v3/types > /dev/null 2>&1 && return 0
      sleep 0.5
    done
    echo "cinder-api did not answer in 120 s" >&2
    return 1
  fi
  # The pools show before cinder-volume consumes its RPC queue (its init_host publishes
  # them, then the RPC server starts): a create cast in between is lost. Wait for both.
  for _ in $(seq 1 240); do
    n=$(curl -s -H 'X-Auth-Token: admin:admin' -H 'OpenStack-API-Version: volume 3.70' \
      http://127.0.0.1:8776/v3/scheduler-stats/get_pools 2>/dev/null |
      /usr/bin/python3 -c 'import sys,json; print(len(json.load(sys.stdin)["pools"]))' 2>/dev/null || true)
    [[ ${n:-0} -ge 2 ]] && rpc_ready && return 0
    sleep 0.5
  done
  tail -30 logs/volume.log logs/volume.stdout 2>/dev/null
  echo "cinder did not report the 2 pools in 120 s" >&2
  return 1
}

# rpc_ready: cinder-volume consumes its own RPC queue (cinder-volume.HOST@sharedlvm).
rpc_ready() {
  ERL_EPMD_ADDRESS=127.0.0.1 runuser -u rabbitmq -- env RABBITMQ_NODENAME=rabbit@localhost \
    rabbitmqctl -n rabbit@localhost -q list_queues name consumers 2>/dev/null |
    awk '$1 ~ /^cinder-volume\..*@sharedlvm$/ && $2 > 0 {ok = 1} END {exit !ok}'
}

case $cmd in
  start) start "$@" ;;
  stop) stop ;;
  rpc-ready) rpc_ready ;;
  *) echo "usage: $0 start|stop|rpc-ready WORKDIR [KUBECONFIG NODE]" >&2; exit 2 ;;
esac
