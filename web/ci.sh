#!/usr/bin/env bash
# CI steps of the web page (issue 5), called from .ci/run before the Go tests:
#   1. install Debian's Chromium when /usr/bin/chromium is missing (the
#      browser tests never download a browser);
#   2. npm ci in web/ (exact versions from package-lock.json, npm registry only);
#   3. rebuild the bundle and fail if it differs from the committed
#      internal/web/dist, so the embedded page always matches its sources.
# Run from anywhere: web/ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=0
apt_install() {
	if [ "$apt_updated" = 0 ]; then
		apt-get update -qq
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

if [ ! -x /usr/bin/chromium ]; then
	echo "web: installing Debian's chromium"
	apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "web: installing node and npm"
	apt_install nodejs npm
fi
echo "web: $(/usr/bin/chromium --version 2>/dev/null | tail -n1), node $(node --version), npm $(npm --version)"

echo "web: npm ci"
(cd web && npm ci --no-audit --no-fund --loglevel=error)

echo "web: rebuilding the bundle"
(cd web && npm run --silent build)
if ! git diff --exit-code --stat -- internal/web/dist || [ -n "$(git status --porcelain -- internal/web/dist)" ]; then
	echo "web: internal/web/dist differs from 'cd web && npm run build'; rebuild and commit it" >&2
	git status --short -- internal/web/dist >&2
	exit 1
fi
echo "web: committed bundle is current ($(gzip -9c internal/web/dist/app.js | wc -c) bytes of JS gzipped)"
