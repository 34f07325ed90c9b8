#!/usr/bin/env bash
# Builds the fuzz targets (libFuzzer + AddressSanitizer) and runs each for SECONDS, by `make fuzz`:
#   Fuzz/run.sh [SECONDS] [TARGET ...]        (default 60 s; targets read write journal directory)
# Environment: FUZZ_PARALLEL=2 runs two targets at once; FUZZ_SEED=N fixes libFuzzer's seed (CI);
# FUZZ_TIMEOUT=S (default 1) for a campaign that shares the machine (then replay the corpus at 1 s).
# Corpora grow in .build-fuzz/corpus/TARGET across runs, starting from seeds that
# make_seeds.sh generates. A finding (a trap, an AddressSanitizer report, a leak, an input over
# 1 s, an allocation over the 16 MiB budget + 48 MiB) is saved in .build-fuzz/findings/TARGET
# and makes the run fail. Prints per target: executions, executions per second, coverage.
# Then the image corpora are replayed through the holdfast binary (replay.py).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(read write journal directory)
scratch=.build-fuzz
budget_mb=16                      # Fuzz.memoryBudget
limit_mb=$((budget_mb + 48))

echo "== building the fuzz targets (release, -sanitize=fuzzer,address)"
mkdir -p "$scratch"
for t in "${targets[@]}"; do
  if ! HOLDFAST_FUZZ=1 swift build -c release --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address --product "fuzz-$t" \
       >"$scratch/build-$t.log" 2>&1; then
    grep -E "error" "$scratch/build-$t.log" | head -20 >&2
    echo "fuzz: fuzz-$t did not build (log: $scratch/build-$t.log)" >&2
    exit 1
  fi
done

seeds=$scratch/seeds
[ -d "$seeds/read" ] || Fuzz/make_seeds.sh "$seeds"

run_one() {
  local t=$1 seedset corpus=$scratch/corpus/$1 findings=$scratch/findings/$1 log=$scratch/logs/$1.log
  case $t in read|write) seedset=$seeds/read ;; journal) seedset=$seeds/journal ;; directory) seedset=$seeds/directory ;; esac
  mkdir -p "$corpus" "$findings" "$scratch/logs"
  local extra=(); [ -n "${FUZZ_SEED:-}" ] && extra+=("-seed=$FUZZ_SEED")
  set +e
  ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=64 "$scratch/release/fuzz-$t" "$corpus" "$seedset" \
    -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-1}" -malloc_limit_mb="$limit_mb" -rss_limit_mb=4096 \
    -max_len=2228224 -print_final_stats=1 -artifact_prefix="$findings/" "${extra[@]}" >"$log" 2>&1
  local rc=$?
  set -e
  local done_line runs rate cov
  done_line=$(grep -E '^#[0-9]+' "$log" | tail -1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  local found; found=$(find "$findings" -type f -newer "$log.start" 2>/dev/null | wc -l)
  printf 'fuzz-%-9s %6ss  %10s executions  %7s exec/s  coverage %6s edges  corpus %5s inputs  findings %s\n' \
    "$t" "$seconds" "${runs:-?}" "${rate:-?}" "${cov:-?}" "$(ls "$corpus" | wc -l)" "$found"
  if [ "$rc" != 0 ] || [ "$found" != 0 ]; then
    echo "fuzz-$t: FINDING (exit $rc); input in $findings, log $log:" >&2
    grep -E 'ERROR|SUMMARY|Fatal error|panicked|timeout|out-of-memory|malloc\(' "$log" | head -8 >&2
    return 1
  fi
}

echo "== fuzzing ${seconds}s per target"
failed=0
parallel=${FUZZ_PARALLEL:-1}
pids=()
for t in "${targets[@]}"; do
  mkdir -p "$scratch/logs"; touch "$scratch/logs/$t.log.start"
  if [ "$parallel" -gt 1 ]; then
    run_one "$t" & pids+=($!)
    if [ ${#pids[@]} -ge "$parallel" ]; then wait "${pids[0]}" || failed=1; pids=("${pids[@]:1}"); fi
  else
    run_one "$t" || failed=1
  fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done

# The image corpora again, through the holdfast binary itself (no sanitizers): extract and tree
# each input, which the harnesses do not run; a crash, a slow input or a peak RSS over budget +
# 48 MiB fails. The release binary is judged at 1 s an input; without one (make test builds
# only debug), the debug binary at 5 s.
corpora=()
for t in "${targets[@]}"; do case $t in read|write) corpora+=("$scratch/corpus/$t") ;; esac; done
if [ ${#corpora[@]} -gt 0 ]; then
  if [ -x .build/release/holdfast ]; then binary=.build/release/holdfast; limit=1
  else swift build --product holdfast 2>&1 | grep -E "error" || true; binary=.build/debug/holdfast; limit=5; fi
  echo "== replaying ${corpora[*]} through $binary"
  python3 Fuzz/replay.py --holdfast "$binary" --time-limit "$limit" "${corpora[@]}" || failed=1
fi
exit $failed
