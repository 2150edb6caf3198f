// Package deploy holds caproxy's deployment material (Grafana dashboard,
// Prometheus alert rules, Kubernetes, compose and systemd examples, the
// container image's build files) and the tests that check it against the
// real binary; it has no code of its own.
package deploy
