#!/usr/bin/env bash
# Refreshes the two browser libraries the web UI vendors (no build step: they are committed
# as plain ES modules). Pin the versions here, run it, and commit parley/web/static/vendor/.
set -euo pipefail
cd "$(dirname "$0")/.."
MARKED=18.2.1
DOMPURIFY=3.4.18
dest=parley/web/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack -q "marked@$MARKED" "dompurify@$DOMPURIFY" >/dev/null)
for pkg in "marked-$MARKED" "dompurify-$DOMPURIFY"; do
  mkdir -p "$work/$pkg" && tar xzf "$work/$pkg.tgz" -C "$work/$pkg"
done
strip_map() { sed '/^\/\/# sourceMappingURL=/d' "$1"; }
strip_map "$work/marked-$MARKED/package/lib/marked.esm.js" >"$dest/marked.esm.js"
strip_map "$work/dompurify-$DOMPURIFY/package/dist/purify.es.mjs" >"$dest/purify.es.js"
cp "$work/marked-$MARKED/package/LICENSE" "$dest/LICENSE.marked"
cp "$work/dompurify-$DOMPURIFY/package/LICENSE" "$dest/LICENSE.dompurify"
echo "vendored marked $MARKED and DOMPurify $DOMPURIFY into $dest"
