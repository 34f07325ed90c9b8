#!/usr/bin/env bash
# Checks that the layering of docs/architecture.md holds, so it cannot drift silently:
#  1. every `import` line of a target names a module that target may import (the table below,
#     the same as Package.swift's dependencies);
#  2. nothing above HoldfastFormat reads or writes raw on-disk offsets (le16(0x3A), setLE32(...),
#     u8(...), be32(...)): on-disk layout is spelled out once, in HoldfastFormat.
# Exits 1 and names each violation. Run by `make test` (and alone as `make check-layers`).
set -euo pipefail
cd "$(dirname "$0")/.."

# Modules of the platform, allowed everywhere.
system="Glibc Darwin Synchronization"

# Target folder -> the project and package modules its sources may import.
declare -A allowed=(
  [Sources/CHoldfastShim]=""
  [Sources/HoldfastFormat]="CHoldfastShim"
  [Sources/HoldfastMemory]=""
  [Sources/HoldfastDevice]="CHoldfastShim HoldfastMemory"
  [Sources/HoldfastCache]="HoldfastDevice HoldfastFormat HoldfastMemory"
  [Sources/HoldfastJournal]="HoldfastFormat HoldfastMemory HoldfastDevice HoldfastCache"
  [Sources/Holdfast]="CHoldfastShim HoldfastFormat HoldfastMemory HoldfastDevice HoldfastCache HoldfastJournal Logging"
  [Sources/HoldfastHost]="Holdfast CHoldfastShim"
  [Sources/CFuse3]=""
  [Sources/CFuseDevice]=""
  [Sources/HoldfastFUSE]="Holdfast CFuse3 CFuseDevice"
  [Sources/HoldfastCLI]="Holdfast HoldfastHost HoldfastFUSE ArgumentParser Logging"
  [Sources/holdfast-membench]="HoldfastMemory"
  [Sources/holdfast-fsyncbench]="Holdfast"
  [Tests/HoldfastTestSupport]="Holdfast HoldfastHost HoldfastMemory HoldfastDevice Foundation Testing"
  [Tests/HoldfastFormatTests]="HoldfastFormat HoldfastTestSupport Foundation Testing"
  [Tests/HoldfastMemoryTests]="HoldfastMemory Foundation Testing"
  [Tests/HoldfastDeviceTests]="HoldfastDevice HoldfastMemory HoldfastTestSupport Foundation Testing"
  [Tests/HoldfastCacheTests]="Holdfast HoldfastCache HoldfastDevice HoldfastMemory HoldfastTestSupport Foundation Testing"
  [Tests/HoldfastTests]="Holdfast HoldfastHost HoldfastFormat HoldfastMemory HoldfastCache HoldfastDevice HoldfastTestSupport Logging Foundation Testing"
  [Tests/HoldfastCLITests]="Holdfast HoldfastDevice CFuseDevice HoldfastTestSupport Foundation Testing"
  [Fuzz/Support]="Holdfast"
  [Fuzz/Read]="FuzzSupport Holdfast"
  [Fuzz/Write]="FuzzSupport Holdfast"
  [Fuzz/Journal]="FuzzSupport HoldfastFormat HoldfastJournal"
  [Fuzz/Directory]="FuzzSupport HoldfastFormat"
)

failures=0
fail() { echo "check-layers: $*" >&2; failures=$((failures + 1)); }

# Every target folder must be in the table: a new target says where it sits.
for dir in Sources/* Tests/* Fuzz/*; do
  [ -d "$dir" ] || continue
  [ -n "${allowed[$dir]+set}" ] || fail "$dir is not in the layer table of scripts/check_layers.sh (add it, and to docs/architecture.md)"
done

# 1. Imports.
for dir in "${!allowed[@]}"; do
  [ -d "$dir" ] || { fail "$dir is in the layer table but does not exist"; continue; }
  ok=" ${allowed[$dir]} $system "
  while IFS=: read -r file line text; do
    module=$(sed -E 's/^[[:space:]]*(@_exported[[:space:]]+|@testable[[:space:]]+|@preconcurrency[[:space:]]+)?import[[:space:]]+((struct|class|enum|protocol|func|var|let|typealias)[[:space:]]+)?([A-Za-z0-9_]+).*/\4/' <<<"$text")
    case "$ok" in
      *" $module "*) ;;
      *) fail "$file:$line imports $module, which ${dir#*/} may not (allowed: ${allowed[$dir]:-none})" ;;
    esac
  done < <(grep -rnE '^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*import[[:space:]]' "$dir" --include='*.swift' || true)
done

# 2. Raw on-disk offsets above HoldfastFormat.
raw='\b(set)?(le|LE|be|BE)(16|32|64)\(|\b(set)?(u8|U8)\('
for dir in Sources/HoldfastDevice Sources/HoldfastCache Sources/HoldfastJournal Sources/Holdfast Sources/HoldfastHost Sources/HoldfastFUSE Sources/HoldfastCLI; do
  while IFS=: read -r file line text; do
    fail "$file:$line reads or writes a raw on-disk offset; name the field in HoldfastFormat instead: $(sed -E 's/^[[:space:]]+//' <<<"$text")"
  done < <(grep -rnE "$raw" "$dir" --include='*.swift' || true)
done

if [ "$failures" -gt 0 ]; then
  echo "check-layers: $failures violation(s) of the layer table (docs/architecture.md)" >&2
  exit 1
fi
echo "check-layers: imports of ${#allowed[@]} targets follow the layer table; no raw on-disk offsets above HoldfastFormat"
