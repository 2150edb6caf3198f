# caproxy — `make run` serves the shipped config; `make test` is what CI runs.
GO ?= go

.PHONY: run build test deps fmt-check vet rules-check image bench bench-redis-down bench-hit bench-nginx load

build:
	$(GO) build -o caproxy .

run: build
	./caproxy -config config.yaml

# deps installs what the tests start for real when missing: redis-server,
# redis-cli (redis-tools) to create a Redis Cluster, promtool for the alert
# rules, podman for the image and chromium for the status page.
deps:
	@{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || { \
		echo "installing redis-server and redis-tools"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null; }
	@command -v promtool >/dev/null 2>&1 || { \
		echo "installing prometheus (promtool)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@# podman builds the image in deploy's TestImage (with Debian's CA bundle);
	@# chromium loads the status page in statuspage's TestBrowser. Either
	@# failing to install leaves its test to skip with the reason.
	@{ command -v podman && test -f /etc/ssl/certs/ca-certificates.crt; } >/dev/null 2>&1 || { \
		echo "installing podman and ca-certificates"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman ca-certificates >/dev/null || true; }
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true; }

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test: deps fmt-check vet rules-check
	$(GO) test -race -count=1 ./...

# rules-check checks the shipped Prometheus alert rules and runs their unit tests.
rules-check:
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml

# image builds the container image $(IMAGE) from a static binary built here,
# the way release tools do (no registry needed): FROM scratch, the binary,
# Debian's CA certificates, user 65532 (deploy/image/Containerfile). The
# Dockerfile builds the same image for builders with a registry.
IMAGE ?= localhost/caproxy:latest
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
image:
	@test -f /etc/ssl/certs/ca-certificates.crt || { \
		echo "installing ca-certificates"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates >/dev/null; }
	set -e; ctx=$$(mktemp -d); trap 'rm -rf "$$ctx"' EXIT; \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w -X main.version=$(VERSION)' -o "$$ctx/caproxy" .; \
	cp /etc/ssl/certs/ca-certificates.crt "$$ctx/"; \
	sh deploy/image/config.sh config.yaml > "$$ctx/config.yaml"; \
	mkdir "$$ctx/state"; \
	podman build -q -f deploy/image/Containerfile -t $(IMAGE) "$$ctx"

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./cache/ ./limit/ ./proxy/ ./deadline/
	$(GO) test -run '^$$' -bench 'MissRedis/(up|down/breaker)' -benchmem ./redisconn/

# bench-redis-down measures a miss's Redis work with Redis down before the
# circuit breaker (go-redis defaults: seconds per miss) and after.
bench-redis-down:
	$(GO) test -run '^$$' -bench 'MissRedis/down' -benchtime=5x ./redisconn/

# bench-hit compares caproxy's cache-hit throughput with a bare net/http handler under the same wrk load.
bench-hit:
	scripts/bench-hit.sh

# bench-nginx compares caproxy's cache hit with nginx proxy_cache and a bare
# handler in one run, with and without access logs (installs nginx and wrk
# with apt-get when missing).
bench-nginx:
	scripts/bench-nginx.sh

# load drives a realistic mix through caproxy in front of the simulator.
# SCENARIO=below|above runs a refresh-scheduling regime instead (scripts/scenario.sh).
load:
	@if [ -n "$(SCENARIO)" ]; then SCENARIO=$(SCENARIO) scripts/scenario.sh; else scripts/load.sh; fi
