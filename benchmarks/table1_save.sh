#!/usr/bin/env bash
# Copies each Table 1 run's resume state (last.ckpt, config.yaml, results.json) from
# runs/table1/<name>/version_0/ to checkpoints/table1/<name>/, where it is committed and from where
# benchmarks/table1_queue.sh resumes it in a fresh clone. Safe while the runs go on: checkpoints
# are written atomically, and a results.json ahead of its last.ckpt is cut back to the
# checkpoint's epoch on resume. Stop the runs first (kill -TERM, which saves a mid-epoch
# last.ckpt) to keep the epoch in progress too.
#   benchmarks/table1_save.sh            # every run
#   benchmarks/table1_save.sh pconv-ep-s0 eb2h-ep-s7
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  set -- $(ls runs/table1 2>/dev/null)
fi
copy() {  # beside the target, then renamed: an interrupted copy leaves the old file whole
  cp "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2" || { rm -f "$2.tmp.$$"; return 1; }
}
for name in "$@"; do
  run="runs/table1/$name/version_0"
  if [ ! -f "$run/checkpoints/last.ckpt" ]; then
    echo "skip $name: no $run/checkpoints/last.ckpt" >&2
    continue
  fi
  dest="checkpoints/table1/$name"
  mkdir -p "$dest"
  copy "$run/checkpoints/last.ckpt" "$dest/last.ckpt"
  copy "$run/config.yaml" "$dest/config.yaml"
  if [ -f "$run/results.json" ]; then  # none before the first epoch's end
    copy "$run/results.json" "$dest/results.json"
    echo "saved $name: $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["epochs"]), "epochs")' "$run/results.json")"
  else
    rm -f "$dest/results.json"  # an earlier run's, not this one's
    echo "saved $name: no epoch finished"
  fi
done
