#!/bin/sh
# config.sh CONFIG writes the container's config: CONFIG (the shipped
# config.yaml) with the listeners facing the container network instead of
# its loopback, which off loopback needs an admin token: the container
# refuses to start unless CAPROXY_ADMIN_TOKEN (16+ characters) is set.
# make image and the Dockerfile both run it, so their images carry one config.
set -eu
# The state file (tokens, budget logs) goes to /var/lib/caproxy, writable by
# the non-root user; mount a volume there to keep it across containers.
sed -e 's/^listen: .*/listen: 0.0.0.0:8080/' -e 's/^admin_listen: .*/admin_listen: 0.0.0.0:9090/' \
    -e 's|^  dir:.*|  dir: /var/lib/caproxy|' "$1"
echo 'admin_token: ${CAPROXY_ADMIN_TOKEN}'
