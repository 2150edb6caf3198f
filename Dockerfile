# syntax=docker/dockerfile:1
# For builders with a registry. `make image` builds the same final image from
# a binary built on the host (deploy/image/Containerfile); a test in deploy/
# keeps the two final stages alike.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/caproxy . \
 && cp /etc/ssl/certs/ca-certificates.crt /out/ \
 && sh deploy/image/config.sh config.yaml > /out/config.yaml \
 && mkdir /out/state

FROM scratch
COPY --from=build /out/caproxy /caproxy
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/config.yaml /etc/caproxy/config.yaml
# The state directory, writable by the non-root user, for a read-only root.
COPY --from=build --chown=65532:65532 /out/state/ /var/lib/caproxy/
USER 65532:65532
# 8080: proxy (client_auth stays "required" off loopback); 9090: admin
# (/metrics, /admin and the status page need "Authorization: Bearer
# $CAPROXY_ADMIN_TOKEN"; /healthz and /readyz are open): publish it only to
# operators.
EXPOSE 8080 9090
ENTRYPOINT ["/caproxy"]
CMD ["-config", "/etc/caproxy/config.yaml"]
