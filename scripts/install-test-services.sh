#!/usr/bin/env bash
# Installs the servers the integration tests start themselves (redis-server, PostgreSQL), and chromium for
# the HTML report test, when they are missing. Uses apt-get as root, or through sudo; otherwise says
# what is missing (those tests then skip).
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
# headless browser that opens `ser-batch report` pages in the tests (a screenshot); optional: its test
# skips without it, and a failed install (e.g. a distribution that ships chromium as a snap) is only noted
browser=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || browser=(chromium)
[ ${#missing[@]} -eq 0 ] && [ ${#browser[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "note: ${missing[*]} ${browser[*]} not installed and no root/sudo: the tests that need them will be skipped" >&2
  exit 0
fi
if [ ${#browser[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
    || echo "note: chromium not installed; the HTML report screenshot test will be skipped" >&2
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  # the Debian packages start system services; the tests start their own instances on free ports
else
  echo "note: no apt-get; install ${missing[*]} by hand to run the integration tests" >&2
fi
