#!/bin/sh
# config.sh CONFIG writes the container's config: CONFIG (the shipped
# config.yaml) with the listeners facing the container network instead of
# its loopback, which off loopback needs an admin token: the container
# refuses to start unless CAPROXY_ADMIN_TOKEN (16+ characters) is set.
# make image and the Dockerfile both run it, so their images carry one config.
set -eu
sed -e 's/^listen: .*/listen: 0.0.0.0:8080/' -e 's/^admin_listen: .*/admin_listen: 0.0.0.0:9090/' "$1"
echo 'admin_token: ${CAPROXY_ADMIN_TOKEN}'
