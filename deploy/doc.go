// Package deploy holds no code: its directory holds Shale's deployment
// files (Dockerfiles, docker-compose.yml, the Helm chart) and its tests
// check them with the real tools: the compose file runs a three-broker
// cluster in Docker, the chart is linted and rendered by helm, and the
// Prometheus alerting rules pass promtool's checks and their unit tests.
package deploy
