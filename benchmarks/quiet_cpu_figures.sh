#!/bin/bash
# The CPU figures quoted in README.md ("Measured speed") and training/BUNDLED.md, in one run:
#   benchmarks/quiet_cpu_figures.sh cpu-epyc-zen4-2c [--loop]
# (--loop: the loop's figures only — start-up, demo, pipelines — without the ~15 min of network rows)
# An AVX2 stand-in on an AVX-512 / AMX machine (engines/cpu.py; ONNX Runtime has no cap, OpenVINO and torch do):
#   ONEDNN_MAX_CPU_ISA=AVX2 OV_CPU_MAX_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MEASURE_DIR=runs/measure-avx2 \
#     benchmarks/quiet_cpu_figures.sh cpu-xeon-amx-2c-as-avx2 --loop
# Run it on a quiet machine (pause any training first; tools/pause_training.py can wrap it). Writes
# logs under runs/measure/ (or $MEASURE_DIR) and the benchmark JSONs under benchmarks/results/<CPU>-*.json.
set -u
cd "$(dirname "$0")/.."
CPU=${1:?give a CPU name for the result files, e.g. cpu-epyc-zen4-2c}
OUT=${MEASURE_DIR:-runs/measure}  # where the logs go (MEASURE_DIR=… to keep an earlier run's)
R=benchmarks/results
mkdir -p $OUT
lscpu > $OUT/lscpu.txt
export SPLINECAM_CACHE=$PWD/$OUT/cache; rm -rf "$SPLINECAM_CACHE"
# start-up: empty caches, then warm
/usr/bin/time -f "%e s wall" -o $OUT/startup-cold.txt splinecam demo --max-frames 1 --out /tmp/d1.mp4 > $OUT/startup-cold.log 2>&1
/usr/bin/time -f "%e s wall" -o $OUT/startup-warm.txt splinecam demo --max-frames 1 --out /tmp/d1.mp4 > $OUT/startup-warm.log 2>&1
# the demo, both modes, auto and fp32 (what a CPU without bf16 gets)
splinecam demo --out $OUT/demo.mp4 > $OUT/demo.log 2>&1
splinecam demo --realtime --out $OUT/demo-rt.mp4 > $OUT/demo-rt.log 2>&1
splinecam demo --backend openvino --precision fp32 --out $OUT/demo-fp32.mp4 > $OUT/demo-fp32.log 2>&1
splinecam demo --backend openvino --precision fp32 --realtime --out $OUT/demo-fp32-rt.mp4 > $OUT/demo-fp32-rt.log 2>&1
# the cost of pacing, medians of 10 alternated runs per mode (issue #12; one pair is too noisy to compare)
python -m splinecam.benchmarks.paced_vs_unpaced --runs 10 --json $R/$CPU-paced-vs-unpaced.json > $OUT/paced-vs-unpaced.log 2>&1
python -m splinecam.benchmarks.paced_vs_unpaced --runs 10 --json $R/$CPU-paced-vs-unpaced-fp32.json -- --backend openvino --precision fp32 > $OUT/paced-vs-unpaced-fp32.log 2>&1
python -m splinecam.benchmarks.black_regions $OUT/demo.mp4 --avatar live/assets/mona.jpg > $OUT/black-demo.log 2>&1
# committed pipeline JSONs
splinecam bench --pipeline live/assets/webcam.mp4 --json $R/$CPU-pipeline-webcam.json > $OUT/bench-pipe.log 2>&1
splinecam bench --pipeline live/assets/webcam.mp4 --pipeline-unpaced --json $R/$CPU-pipeline-webcam-unpaced.json > $OUT/bench-pipe-unpaced.log 2>&1
splinecam bench --pipeline live/assets/webcam.mp4 --backends openvino --precisions fp32 --json $R/$CPU-pipeline-webcam-fp32.json > $OUT/bench-pipe-fp32.log 2>&1
splinecam bench --pipeline live/assets/webcam.mp4 --pipeline-unpaced --backends openvino --precisions fp32 --json $R/$CPU-pipeline-webcam-fp32-unpaced.json > $OUT/bench-pipe-fp32-unpaced.log 2>&1
# network rows
if [ "${2:-}" != "--loop" ]; then
splinecam bench --json $R/$CPU-cpu-256.json --plot $R/$CPU-cpu-256.png > $OUT/bench-cpu256.log 2>&1
splinecam bench --config lite-256 --json $R/$CPU-lite-256.json --plot $R/$CPU-lite-256.png > $OUT/bench-lite.log 2>&1
/usr/bin/time -f "%e s wall" -o $OUT/bench-vox.time splinecam bench --config vox-256 --json $R/$CPU-vox-256.json --plot $R/$CPU-vox-256.png > $OUT/bench-vox.log 2>&1
fi
python -m splinecam.benchmarks.report   # the table in benchmarks/README.md
tail -n 3 $OUT/demo*.log; tail -n 2 $OUT/paced-vs-unpaced*.log; cat $OUT/startup-*.txt; [ "${2:-}" = "--loop" ] || cat $OUT/bench-vox.time
