# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/caproxy .
# In a container the listeners must face the container network, not its loopback.
# Off loopback the admin listener needs a bearer token: the container refuses
# to start unless CAPROXY_ADMIN_TOKEN (16+ characters) is set.
# The state file (tokens, budget logs) goes to /var/lib/caproxy, writable by
# the nonroot user; mount a volume there to keep it across containers.
RUN sed -e 's/^listen: .*/listen: 0.0.0.0:8080/' -e 's/^admin_listen: .*/admin_listen: 0.0.0.0:9090/' \
        -e 's|^  dir: .*|  dir: /var/lib/caproxy|' config.yaml > /out/config.yaml \
 && echo 'admin_token: ${CAPROXY_ADMIN_TOKEN}' >> /out/config.yaml \
 && grep -q '^listen: 0.0.0.0:8080' /out/config.yaml && grep -q '^admin_listen: 0.0.0.0:9090' /out/config.yaml \
 && grep -q '^  dir: /var/lib/caproxy$' /out/config.yaml && mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/caproxy /usr/local/bin/caproxy
COPY --from=build /out/config.yaml /etc/caproxy/config.yaml
COPY --from=build --chown=65532:65532 /out/state /var/lib/caproxy
USER nonroot:nonroot
# 8080: proxy (client_auth stays "required" off loopback); 9090: admin
# (/metrics /admin /debug/pprof need "Authorization: Bearer $CAPROXY_ADMIN_TOKEN";
# /healthz /readyz are open): publish it only to operators.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/caproxy"]
CMD ["-config", "/etc/caproxy/config.yaml"]
