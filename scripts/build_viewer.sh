#!/usr/bin/env bash
# Rebuild the browser viewer's bundle (viewer/ -> nnunet_quantif/server/static/) from the locked npm packages.
# With --check, fail when the rebuilt files differ from the committed ones (CI: the shipped bundle is its source's).
# Users need none of this: the built bundle ships inside the Python package.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm > /dev/null; then
    echo "build_viewer.sh: npm not found (install Node.js 20 and npm)" >&2
    exit 1
fi
(cd viewer && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
if [[ "${1:-}" == "--check" ]]; then
    static=nnunet_quantif/server/static
    if ! git diff --exit-code --stat -- "$static" || [[ -n "$(git status --porcelain --untracked-files=all -- "$static")" ]]; then
        echo "build_viewer.sh: the committed viewer bundle in $static is not what viewer/ builds;" \
             "run scripts/build_viewer.sh and commit the result" >&2
        exit 1
    fi
    echo "viewer bundle: the committed files are the build's"
fi
