# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/caproxy .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/caproxy /usr/local/bin/caproxy
COPY config.yaml /etc/caproxy/config.yaml
USER nonroot:nonroot
# 8080: proxy; 9090: admin (/metrics /healthz /readyz). In a container, set
# listen/admin_listen to 0.0.0.0:… (client_auth must then stay "required").
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/caproxy"]
CMD ["-config", "/etc/caproxy/config.yaml"]
