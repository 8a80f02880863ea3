#!/usr/bin/env bash
# Debian packages for the OpenStack driver's tests (idempotent; as root through apt):
#   --unit   python3-cinder + python3-kubernetes + the test tools: the driver's unit tests
#   (none)   also Debian's Cinder services, RabbitMQ and MariaDB: the openstack tier
#   --bed    also glance-api: Cinder on the VM bed (image <-> volume copies)
# Prints nothing on stdout; exits 0 when everything is installed. Services are never started
# by the packages (a temporary policy-rc.d refuses them); the tier starts its own on loopback.
set -euo pipefail
PKGS=(python3-cinder python3-kubernetes python3-stestr python3-oslotest python3-ddt python3-flake8 python3-os-brick)
[[ "${1:-}" == --unit ]] || PKGS+=(cinder-api cinder-scheduler cinder-volume python3-cinderclient rabbitmq-server mariadb-server dmidecode qemu-utils curl)
[[ "${1:-}" == --bed ]] && PKGS+=(glance-api)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
[[ ${#missing[@]} == 0 ]] && exit 0
if [[ $(id -u) != 0 ]]; then
  echo "openstack-packages: missing Debian packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
t0=$SECONDS
echo "openstack-packages: installing ${missing[*]} (first time only; ~6 min for the services)" >&2
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
echo "openstack-packages: installed in $((SECONDS - t0)) s" >&2
