#!/usr/bin/env bash
# Process replay: does the work tree generate the same code as BASE?
#   scripts/replay.sh [BASE]     (BASE: a commit, default HEAD)
# Builds BASE in a worktree under build-replay/ (ccache makes it quick after
# the first time), records the example corpus with both builds
# (tests/replay/replay.py) and compares: exit 0 when every graph, kernel IR,
# CPU LLVM IR, PTX and plan summary is unchanged, 1 with the diffs otherwise.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${1:-HEAD}"
WORK="$ROOT/build-replay"
rev="$(git -C "$ROOT" rev-parse --verify "$BASE^{commit}")"
mkdir -p "$WORK"
if [[ -d "$WORK/src/.git" || -f "$WORK/src/.git" ]]; then
  git -C "$WORK/src" checkout -q --detach "$rev"
else
  rm -rf "$WORK/src"
  git -C "$ROOT" worktree add -q --detach "$WORK/src" "$rev"
fi
echo "replay: building base $(git -C "$ROOT" log -1 --format='%h %s' "$rev")"
bash "$ROOT/scripts/build.sh" "$ROOT/build" >/dev/null
# Inside the worktree, as build/ is in the tree: the same relative paths, so
# ccache hits.
bash "$WORK/src/scripts/build.sh" "$WORK/src/build" >/dev/null
rm -rf "$WORK/base" "$WORK/head"
python3 "$ROOT/tests/replay/replay.py" dump "$WORK/base" --bin "$WORK/src/build/bin"
python3 "$ROOT/tests/replay/replay.py" dump "$WORK/head" --bin "$ROOT/build/bin"
python3 "$ROOT/tests/replay/replay.py" compare "$WORK/base" "$WORK/head"
