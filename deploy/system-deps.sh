#!/usr/bin/env bash
# The Debian packages the tests and `make run` use, installed only when missing (apt-get update once, first):
# Java and Maven (the local Kafka from Maven Central's jars), Prometheus and promtool (the monitoring tests),
# Chromium, its driver and CJK fonts (pages tested as a person sees them); docker-compose (Debian's v1, whose
# `config` checks deploy/compose.yaml in tests/unit/test_deploy_files.py; no daemon is needed).
set -euo pipefail
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v docker-compose >/dev/null || need+=(docker-compose)
{ command -v fc-list >/dev/null && fc-list | grep -qi "Noto Sans CJK"; } || need+=(fonts-noto-cjk)
[ "${#need[@]}" -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing Debian packages: ${need[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
