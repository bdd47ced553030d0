#!/bin/bash
# Side by side: `splinecam demo` (unpaced and --realtime) with some files as they were at an older commit against
# the working tree's, alternated N times, medians printed. How README's "what the loop changes of 2026-12-07 did"
# was measured (on a host whose speed drifts, only figures taken side by side compare):
#   benchmarks/loop_ab.sh 69c20d0 5 live/sinks.py live/tracking.py engines/faces/geometry.py
# The files are swapped in place for the "old" runs and always put back (even on Ctrl-C). Quiet machine only.
set -u
cd "$(dirname "$0")/.."
OLD=${1:?give the older commit}; N=${2:?give the number of alternations}; shift 2
FILES=("$@"); [ ${#FILES[@]} -gt 0 ] || { echo "give the files to swap" >&2; exit 2; }
OUT=$(mktemp -d); mkdir -p "$OUT/new"
for f in "${FILES[@]}"; do mkdir -p "$OUT/new/$(dirname "$f")"; cp "$f" "$OUT/new/$f"; done
restore() { for f in "${FILES[@]}"; do cp "$OUT/new/$f" "$f"; done; }
trap restore EXIT
for i in $(seq 1 "$N"); do
  for v in old new; do
    for f in "${FILES[@]}"; do if [ $v = old ]; then git show "$OLD:$f" > "$f"; else cp "$OUT/new/$f" "$f"; fi; done
    for mode in unpaced paced; do
      flag=""; [ $mode = paced ] && flag="--realtime"
      (cd "$OUT" && splinecam demo $flag --out "$OUT/d.mp4" --metrics "$OUT/$v-$mode-$i.json" > "$OUT/$v-$mode-$i.log" 2>&1)
    done
  done
done
restore
python - "$OUT" <<'PY'
import glob, json, sys
import numpy as np
out = sys.argv[1]
for v in ("old", "new"):
    for mode in ("unpaced", "paced"):
        rs = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{v}-{mode}-*.json"))]
        if not rs:
            continue
        med = lambda xs: float(np.median(xs))
        fps = [r["fps"]["processed"] for r in rs]
        print(f"{v:3s} {mode:7s} n={len(rs)}: fps {med(fps):.1f} [{min(fps):.1f}-{max(fps):.1f}], "
              f"p95 {med([r['latency_ms']['p95'] for r in rs]):.0f} ms, "
              f"generate {med([r['stages_ms']['generate'] for r in rs]):.1f} ms, "
              f"track {med([r['stages_ms']['track'] for r in rs]):.1f} ms, "
              f"dropped {[r['frames'].get('dropped', 0) for r in rs]}")
PY
echo "runs in $OUT"
