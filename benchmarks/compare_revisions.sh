#!/usr/bin/env bash
# `ser-batch submit DATA -j 2` of an older revision against the working tree, alternating, on a
# database created before the clock starts (issue 14's before/after table in throughput.md).
#
#   benchmarks/compare_revisions.sh REV DATA [ROUNDS]
#
# REV is checked out into a temporary worktree and run with this checkout's virtualenv
# (`python -m producer.cli` from that worktree imports its code). Prints, per run: which side,
# round, wall seconds, files/s, and the command's own classify time.
set -euo pipefail
rev=${1:?revision}; data=${2:?corpus folder}; rounds=${3:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
py="$here/.venv/bin/python"
tmp=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$tmp/before" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$here" worktree add --detach "$tmp/before" "$rev" >/dev/null 2>&1
n=$(find "$data" -type f \( -name '*.flac' -o -name '*.wav' \) | wc -l)
for r in $(seq 1 "$rounds"); do
  for side in before after; do
    dir=$here; [ "$side" = before ] && dir=$tmp/before
    db=$tmp/$side-$r.db
    (cd "$dir" && SER_DATABASE_URL=sqlite:///$db "$py" -m producer.cli db upgrade >/dev/null 2>&1)
    s=$(date +%s.%N)
    (cd "$dir" && SER_DATABASE_URL=sqlite:///$db "$py" -m producer.cli submit "$data" -j 2 -q >"$tmp/out" 2>&1)
    e=$(date +%s.%N)
    echo "$side $r $("$py" -c "print(round($e - $s, 2), round($n / ($e - $s), 1))") $(grep -o 'in [0-9.]* s' "$tmp/out")"
  done
done
