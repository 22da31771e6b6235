#!/usr/bin/env bash
# Makes node-postgres available to tests/node/*.js: Debian's node-pg when it
# is installed (tests/install-deps.sh installs it with nodejs on a machine
# without Node.js), else the npm registry's pg into DIR/node_modules.
#   install.sh DIR
set -euo pipefail
dir=$1
if NODE_PATH=/usr/share/nodejs node -e "require('pg')" 2>/dev/null; then
    echo "node-postgres: Debian's node-pg"
    exit 0
fi
mkdir -p "$dir"
cp "$(dirname "$0")/package.json" "$dir/"
cd "$dir"
npm install --no-audit --no-fund --loglevel=error
echo "node-postgres: $(node -e "console.log(require('$dir/node_modules/pg/package.json').version)") from npm"
