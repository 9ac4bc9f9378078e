#!/usr/bin/env bash
# The GPU acceptance suite: every GPU check and benchmark in one call, for a machine with one
# CUDA GPU (sized for about 8 minutes on one H200). Prints one JSON line per check and writes
#   OUT/results.jsonl   the same JSON lines
#   OUT/suite.log       every command's output
#   OUT/fp8_vs_bf16.csv/.png   (section fp8 only) the two loss curves
#
#   bash benchmarks/gpu_suite.sh OUT [--nanogpt DIR] [--sections "a b c"] [--benches "slm:32 ..."]
#                                    [--budget S] [--step-timeout S] [--noise] [--cpu]
#
# Sections (default: the acceptance list; `speed` adds the speed-option measurements):
#   env tests data run resume torchrun fsdp eval export generate bench
#   speed = attention muon compile_modes memory fp8
#   none: no section (the wheels, if any, and the `done` line)
#   noise (or --noise): a second uninterrupted run of `run`'s settings, whose losses after the
#   cut are compared with the first run's: the run-to-run noise over the steps the resume
#   check compares (`run` took 74 s on one H200 with a cold compile cache; this one finds it
#   warm). It runs right after `resume`, so it can push later sections past the budget.
# A section that would not finish inside --budget seconds (default 470) is skipped with a note,
# and a command still running when the budget is spent is stopped (its line says so), so the
# call ends, with its `done` line, a few seconds after the budget. A SIGTERM or Ctrl-C to the
# suite stops the command it is running too (and removes a work folder of its own).
# --nanogpt DIR (or NANOGPT_DIR): a folder holding nanoGPT's model.py, timed beside `bench` at
# the same settings (AdamW, as nanoGPT trains); without it those rows are skipped with a note,
# and a folder without model.py is a usage error. OUT, DIR, SUITE_WORK and SUITE_WHEELS are
# relative to the folder the script is called from.
# --benches: the bench rows, PRESET:BATCH (default "slm:32 regular:16 slm:32:muon slm:64
# regular:32"); a third field times ours alone with an option (muon, fp8, autotune,
# cudagraphs, or key=value settings joined by +; see bench_row), against the same call's
# nanoGPT row of that PRESET:BATCH. Each side compiles
# into an empty cache of its own, times its steps BENCH_REPEAT times (default 3), and the first
# pair is profiled (where the step's time goes, kind by kind, in its `bench-ratio` line).
# --step-timeout S (default 300): a command still running after S seconds is stopped, so one
# hang cannot take the whole call.
# SUITE_WORK=DIR keeps the work folder (corpus, runs) where a later call can reuse it; without
# it the work folder is a new one under $TMPDIR (/tmp), removed at the end (the logs are in OUT).
# PYTHON: the interpreter (default .venv/bin/python where it exists, else python3).
# Exit status: 0 when every command and check passed, 1 when any failed, 2 when the interpreter
# lacks torch. The last JSON line, `done`, lists what `passed`, what `failed` and what was
# `skipped` (for time, or for want of what an earlier section makes), and the same three lines
# close stderr.
# The arguments are checked before anything runs: a missing OUT, an OUT that is a file, an
# unknown section or a --benches row that is not PRESET:BATCH[:OPTION] is one line and exit 2.
# --cpu: the same path, shortened, on the CPU (tiny preset, a slice of the corpus), to check
# the script itself where there is no GPU.
#
# Python packages: torch (2.4 or later; tried on 2.11 and 2.13), numpy, tokenizers, safetensors,
# tqdm, wandb for the W&B offline check, transformers for export parity, pytest for the tests,
# torchao for train.fp8, matplotlib for the fp8 curves' PNG. On a machine without a registry,
# put their wheels (and those of their missing dependencies) in a `.whl/` folder at the
# repository root, or in the folder SUITE_WHEELS names (benchmarks/fetch_wheels.sh downloads
# them on a machine with one): those the machine lacks are installed, without the network,
# into the work folder's site/, which goes first on PYTHONPATH (a `wheels` line says how many
# and how long). Whatever is already installed is used as it is. A section whose package is
# missing fails with a note naming it.
set -uo pipefail
CALLER="$PWD" # where OUT, --nanogpt, SUITE_WORK and SUITE_WHEELS are relative to
cd "$(dirname "$0")/.."
ROOT="$PWD"
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$CALLER/$1" ;; esac; }

OUT="${OUT:-}" NANOGPT="${NANOGPT_DIR:-}" SECTIONS="" BUDGET="${SUITE_BUDGET_S:-470}" CPU=0
BENCH_ROWS="" STEP_TIMEOUT=300 NOISE=0
usage() { echo "gpu_suite.sh: $1 (--help shows the usage)" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --nanogpt|--sections|--budget|--benches|--step-timeout)
      [ $# -ge 2 ] && [ -n "$2" ] && [[ "$2" != --* ]] || usage "$1 needs a value"
      case "$1" in
        --nanogpt) NANOGPT="$2" ;; --sections) SECTIONS="$2" ;; --budget) BUDGET="$2" ;;
        --benches) BENCH_ROWS="$2" ;; --step-timeout) STEP_TIMEOUT="$2" ;;
      esac
      shift 2 ;;
    --cpu) CPU=1; shift ;;
    --noise) NOISE=1; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    -*) usage "unknown option $1" ;;
    *) [ -z "$OUT" ] || usage "one output folder, not both $OUT and $1"; OUT="$1"; shift ;;
  esac
done
for n in "$BUDGET" "$STEP_TIMEOUT"; do
  [[ "$n" =~ ^[0-9]+$ ]] || usage "--budget and --step-timeout take whole seconds, not '$n'"
done
# `timeout 0` would not stop anything
[ "$STEP_TIMEOUT" -ge 1 ] || usage "--step-timeout must be at least 1 second"
if [ -n "$NANOGPT" ]; then
  NANOGPT="$(absolute "$NANOGPT")"
  [ -f "$NANOGPT/model.py" ] || usage "no model.py in --nanogpt $NANOGPT (the folder of nanoGPT's model.py)"
fi
OUT="${OUT:-${OUT_DIR:-}}"
[ -n "$OUT" ] || usage "give the output folder first: gpu_suite.sh OUT [options]"
OUT="$(absolute "$OUT")"
[ ! -e "$OUT" ] || [ -d "$OUT" ] || usage "OUT $OUT is a file; give a folder for results.jsonl and suite.log"
KNOWN=" none env tests data run resume torchrun fsdp eval export generate bench speed attention muon compile_modes memory fp8 noise "
for s in $SECTIONS; do
  [[ "$KNOWN" == *" $s "* ]] || usage "unknown section '$s'; sections:${KNOWN% }"
done
# bench_row_error PRESET:BATCH[:OPTION]: what is wrong with a --benches row, or nothing
bench_row_error() {
  local preset batch opt
  IFS=: read -r preset batch opt <<<"$1"
  case "$preset" in tiny|slm|regular) ;; *) echo "preset '$preset' is not tiny, slm or regular"; return ;; esac
  [[ "$batch" =~ ^[1-9][0-9]*$ ]] || { echo "batch '$batch' is not a number of sequences (1 or more)"; return; }
  case "$opt" in ""|muon|fp8|autotune|cudagraphs|*=*) ;; *) echo "option '$opt' is not muon, fp8, autotune, cudagraphs or key=value+..." ;; esac
}
for row in $BENCH_ROWS; do
  why=$(bench_row_error "$row")
  [ -z "$why" ] || usage "--benches row '$row': $why; rows are PRESET:BATCH[:OPTION], e.g. slm:32:fp8"
done
mkdir -p "$OUT" 2>/dev/null || usage "cannot create the output folder $OUT; give a writable one"
if [ -n "${SUITE_WORK:-}" ]; then
  WORK="$(absolute "$SUITE_WORK")"
  mkdir -p "$WORK"
else  # a folder of its own, removed at the end (its checkpoints take gigabytes)
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/hl-suite.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
fi
RESULTS="$OUT/results.jsonl" LOG="$OUT/suite.log"
: >"$RESULTS"
: >"$LOG"
ACCEPT="env tests data run resume torchrun fsdp eval export generate bench"
SECTIONS="${SECTIONS:-$ACCEPT}"
SECTIONS="${SECTIONS//speed/attention muon compile_modes memory fp8}"
if [ "$NOISE" = 1 ]; then SECTIONS="$SECTIONS noise"; fi
START=$(date +%s)
export PYTHONUNBUFFERED=1 WANDB_SILENT=true TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
FAILED=() PASSED=() SKIPPED=()  # for the `done` line and the exit status

emit() { echo "$1" | tee -a "$RESULTS"; }
note() { emit "{\"section\": \"$1\", \"note\": \"$2\"}"; }
elapsed() { echo $(($(date +%s) - START)); }
# the seconds a command may run: --step-timeout, or what is left of the budget when that is less
limit_s() {
  local left=$((BUDGET - $(elapsed)))
  [ "$left" -ge 1 ] || left=1
  echo $((left < STEP_TIMEOUT ? left : STEP_TIMEOUT))
}
spent() { [ "$(elapsed)" -ge "$BUDGET" ]; }
# late SECTION WHAT: when the budget is spent, WHAT is noted and listed as skipped, and true
late() {
  spent || return 1
  note "$1" "$2 skipped: the budget of $BUDGET s was spent"
  SKIPPED+=("$2 (time)")
}
# A SIGTERM or Ctrl-C to the suite stops the command `run` waits on too (it runs in a process
# group of its own, which the signal would not reach), and the EXIT trap removes the work folder.
CHILD=""
on_signal() { [ -z "$CHILD" ] || kill -TERM "$CHILD" 2>/dev/null; wait; exit 143; }
trap on_signal TERM INT
# why a command given LIMIT seconds was stopped: budget or --step-timeout
stopped_by() { if [ "$1" -lt "$STEP_TIMEOUT" ]; then echo budget; else echo --step-timeout; fi; }
# run NAME CMD...: the command's output goes to the log; a JSON line says how it ended
run() {
  local name="$1" limit rc t0 stop="" why
  shift
  late "$name" "$name" && return 1
  t0=$(date +%s) limit=$(limit_s)
  echo "### $name: $*" >>"$LOG"
  mkdir -p "$WORK/logs"
  timeout -k 10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1 &
  CHILD=$!
  wait "$CHILD"
  rc=$? CHILD=""
  cat "$WORK/logs/$name.log" >>"$LOG"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    why=$(stopped_by "$limit")
    stop=", \"stopped\": \"$why\""
    name="$name (stopped: $why)"
  fi
  emit "{\"step\": \"${name%% *}\", \"rc\": $rc, \"seconds\": $(($(date +%s) - t0))$stop}"
  if [ "$rc" = 0 ]; then PASSED+=("$name"); else FAILED+=("$name"); fi
  return $rc
}
# limited CMD...: the command, stopped after --step-timeout seconds or at the budget's end; its
# output in $OUTPUT (a bench's or a check's JSON line, read by the caller), its errors in the
# log. Waited on as `run` waits, so a signal to the suite stops it too.
OUTPUT=""
limited() {
  local rc
  timeout -k 10 "$(limit_s)" "$@" >"$WORK/output.txt" 2>>"$LOG" &
  CHILD=$!
  wait "$CHILD"
  rc=$? CHILD=""
  OUTPUT=$(cat "$WORK/output.txt")
  return $rc
}
# check NAME CMD...: a command that prints one JSON line (its last) and exits 1 when its check
# fails; its other output goes to the log
check() {
  local name="$1" out rc
  shift
  late "$name" "$name" && return 0
  echo "### $name: $*" >>"$LOG"
  limited "$@"
  rc=$? out=$OUTPUT
  printf '%s\n' "$out" | sed '$d' >>"$LOG"
  out=$(printf '%s\n' "$out" | tail -1)
  if [[ "$out" == "{"* ]]; then emit "$out"; else note "$name" "no result (exit code $rc): see suite.log"; fi
  if [ "$rc" = 0 ] && [[ "$out" == "{"* ]]; then PASSED+=("$name"); else FAILED+=("$name"); fi
}
# want SECTION COST [WHAT]: true when the section was asked for and COST more seconds fit the
# budget; else, when it was asked for, WHAT (default SECTION) is noted and listed as skipped
want() {
  case " $SECTIONS " in *" $1 "*) ;; *) return 1 ;; esac
  if [ $(($(elapsed) + $2)) -gt "$BUDGET" ]; then
    note "$1" "skipped${3:+ ($3)}: about $2 s more would pass the budget of $BUDGET s ($(elapsed) s used)"
    SKIPPED+=("${3:-$1} (time)")
    return 1
  fi
  echo "=== ${3:-$1} at $(elapsed) s" | tee -a "$LOG" >&2
}
# needs SECTION PATH WHAT: true when PATH, which an earlier section makes, is there
needs() {
  [ -e "$2" ] && return 0
  note "$1" "skipped: no $3 ($2): the section that makes it did not run or failed"
  SKIPPED+=("$1 (no $3)")
  return 1
}
# has SECTION MODULE: true when the interpreter imports MODULE; else SECTION fails, saying so
has() {
  "$PY" -c "import $2" >/dev/null 2>&1 && return 0
  note "$1" "failed: $PY cannot import $2 (put its wheel in $WHEELS: benchmarks/fetch_wheels.sh)"
  FAILED+=("$1 (no $2)")
  return 1
}
first_step() {
  local s
  s=$(grep -ho "first step took [0-9.]* s" "$1" 2>/dev/null | head -1 | grep -o "[0-9.]*" | head -1)
  echo "${s:-null}"
}
json_list() { printf '%s\n' "$@" | "$PY" -c "import json, sys; print(json.dumps([l for l in sys.stdin.read().splitlines() if l]))"; }

# install_into FOLDER WHEELS...: installed without the network; FOLDER goes first on PYTHONPATH
install_into() {
  local folder="$1"
  shift
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$folder" "$@" >>"$LOG" 2>&1 || return 1
  export PYTHONPATH="$folder${PYTHONPATH:+:$PYTHONPATH}"
}
install_wheels() {
  local t0 rc=0 all=("$WHEELS"/*.whl) wheels=()
  t0=$(date +%s)
  # only packages the machine lacks, one wheel of each, decided in one process (with a
  # `pip show` per wheel this step took 68 s for 34 wheels on a GPU machine); a wheel's file
  # name spells its package with underscores, installed metadata may use - or . instead
  mapfile -t wheels < <("$PY" - "${all[@]}" 2>>"$LOG" <<'EOF'
import importlib.metadata, os, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
have = {norm(d.metadata["Name"] or "") for d in importlib.metadata.distributions()}
lacking = {}
for wheel in sys.argv[1:]:
    name = norm(os.path.basename(wheel).split("-")[0])
    if name not in have:
        lacking.setdefault(name, wheel)
for wheel in lacking.values():
    print(wheel)
EOF
)
  if [ ${#wheels[@]} -gt 0 ]; then install_into "$WORK/site" "${wheels[@]}" || rc=$?; fi
  if [ "$rc" = 0 ] && ls "$WHEELS"/wandb-*.whl >/dev/null 2>&1 &&
    ! "$PY" -c "import wandb" >>"$LOG" 2>&1; then # an installed dependency too old: all of them
    install_into "$WORK/site-all" "${all[@]}" || rc=$?
  fi
  emit "{\"section\": \"wheels\", \"wheels\": ${#all[@]}, \"installed\": ${#wheels[@]}, \"rc\": $rc, \"seconds\": $(($(date +%s) - t0))}"
  if [ "$rc" = 0 ]; then
    PASSED+=(wheels)
  else
    note wheels "pip could not install the wheels in $WHEELS (keep one version of each package; see suite.log)"
    FAILED+=(wheels)
  fi
}
WHEELS="$(absolute "${SUITE_WHEELS:-$ROOT/.whl}")"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then install_wheels; fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
HL=("$PY" -m hellolondon)
if ! "$PY" -c "import torch" >>"$LOG" 2>&1; then
  echo "error: $PY cannot import torch; set PYTHON to an interpreter with torch 2.4 or later (bash scripts/setup.sh makes .venv/bin/python)" >&2
  exit 2
fi

if [ "$CPU" = 1 ]; then
  PRESET=tiny DEV=cpu VOCAB=2048 STEPS=60 CUT=12 BATCH=4 EVALI=2 BENCH_STEPS=3
  BENCH_ROWS="${BENCH_ROWS:-tiny:8}" COMPILE=false ROW_BATCH=8
  EXTRA=("model.n_layer=2" "model.n_embd=64" "model.n_head=2" "model.block_size=64")
  BENCH_ARGS=(--vocab-size 512 --block-size 64)
else
  PRESET=slm DEV=cuda VOCAB=30000 STEPS=200 CUT=100 BATCH=16 EVALI=5 BENCH_STEPS=20
  BENCH_ROWS="${BENCH_ROWS:-slm:32 regular:16 slm:32:muon slm:64 regular:32}" COMPILE=auto
  ROW_BATCH=32  # the compile-mode and fp8 rows, beside the slm:32 row
  EXTRA=() BENCH_ARGS=()
fi
if "$PY" -c "import wandb" 2>/dev/null; then WB=offline; else WB=disabled; fi
COMMON=(--data "$WORK/data" --out-dir "$WORK/runs" --wandb-mode "$WB"
  "train.max_iters=$STEPS" "train.batch_size=$BATCH" "train.eval_interval=$CUT"
  "train.ckpt_interval=$CUT" "train.eval_iters=$EVALI" "train.log_interval=5"
  "train.warmup_iters=20" "train.sample_interval=0" "train.compile=$COMPILE" "${EXTRA[@]}")

# bench PRESET BATCH [SETTING...]: ours with AdamW (nanoGPT's optimizer), then, with no extra
# settings, nanoGPT's model.py at the same settings and the ratio of the two; one process each.
# Fair by construction: each process compiles into its own empty cache (inductor's and
# Triton's), so neither finds the other's kernels and both first steps are cold; the order
# alternates from one pair to the next; each times its steps $REPEAT times (the median, and
# every timing for the spread). The first plain pair also profiles 3 steps of each (`profile`:
# where the step's time goes, kind by kind; the traces stay in the work folder).
PAIRS=0 REPEAT="${BENCH_REPEAT:-3}"
declare -A NANO=()  # nanoGPT's timing per PRESET:BATCH, for the rows with settings
# outcome WHAT RESULT: a bench's result, a JSON line (passed), `late` (not started: the budget
# was spent) or anything else (failed; stopped, when the budget is spent now)
outcome() {
  case "$2" in
    "{"*) PASSED+=("$1") ;;
    late) note bench "$1 skipped: the budget of $BUDGET s was spent" && SKIPPED+=("$1 (time)") ;;
    *) if spent; then
         note bench "$1 failed (stopped: the budget of $BUDGET s was spent): see suite.log"
         FAILED+=("$1 (stopped: budget)")
       else
         note bench "$1 failed: see suite.log"
         FAILED+=("$1")
       fi ;;
  esac
}
# unless_spent CMD...: CMD's last line of output in $OUTPUT, or `late` when the budget is spent
unless_spent() {
  if spent; then OUTPUT=late; else "$@"; OUTPUT=$(printf '%s\n' "$OUTPUT" | tail -1); fi
}
cold() { local d; d=$(mktemp -d "$WORK/cache.XXXXXX"); echo "TORCHINDUCTOR_CACHE_DIR=$d/inductor TRITON_CACHE_DIR=$d/triton"; }
bench_ours() {  # PRESET BATCH [--profile DIR] -- SETTINGS...
  local preset="$1" batch="$2" prof=() ; shift 2
  [ "$1" = --profile ] && { prof=(--profile "$2"); shift 2; }
  shift  # --
  # shellcheck disable=SC2046
  limited env $(cold) "${HL[@]}" bench --preset "$preset" --batch-size "$batch" --steps "$BENCH_STEPS" \
    --warmup 5 --repeat "$REPEAT" --device "$DEV" --compile "$COMPILE" --json "${BENCH_ARGS[@]}" \
    "${prof[@]}" "$@"
}
bench_theirs() {  # PRESET BATCH [--profile DIR]
  # shellcheck disable=SC2046
  limited env $(cold) "$PY" benchmarks/nanogpt_bench.py --nanogpt "$NANOGPT" --preset "$1" \
    --batch-size "$2" --steps "$BENCH_STEPS" --repeat "$REPEAT" --device "$DEV" "${BENCH_ARGS[@]}" \
    --compile "$([ "$COMPILE" = false ] && echo false || echo true)" "${@:3}"
}
bench_pair() {
  local preset="$1" batch="$2" ours="" theirs="" opts=("${@:3}") po=() pt=()
  # flags (--grad-accum N) before settings; AdamW unless the row names an optimizer
  [[ " ${opts[*]} " == *" train.optimizer="* ]] || opts+=(train.optimizer=adamw)
  local with_nano=0
  if [ $# -eq 2 ] && [ -n "$NANOGPT" ]; then with_nano=1; fi
  if [ "$with_nano" = 1 ] && [ "$PAIRS" = 0 ]; then
    po=(--profile "$WORK/profile/hellolondon-$preset-$batch")
    pt=(--profile "$WORK/profile/nanogpt-$preset-$batch")
  fi
  if [ "$with_nano" = 1 ] && [ $((PAIRS % 2)) = 1 ]; then  # nanoGPT first on every other pair
    unless_spent bench_theirs "$preset" "$batch" "${pt[@]}"
    theirs=$OUTPUT
  fi
  unless_spent bench_ours "$preset" "$batch" "${po[@]}" -- "${opts[@]}"
  ours=$OUTPUT
  if [ "$with_nano" = 1 ] && [ $((PAIRS % 2)) = 0 ]; then
    unless_spent bench_theirs "$preset" "$batch" "${pt[@]}"
    theirs=$OUTPUT
  fi
  [ "$with_nano" = 1 ] && PAIRS=$((PAIRS + 1))
  outcome "bench $preset $batch${3:+ ${*:3}}" "$ours"
  [[ "$ours" == "{"* ]] || ours=""
  emit "{\"section\": \"bench\", \"impl\": \"hellolondon\", \"preset\": \"$preset\", \"options\": \"${*:3}\", \"result\": ${ours:-null}}"
  if [ "$with_nano" = 1 ]; then
    outcome "nanoGPT bench $preset $batch" "$theirs"
    [[ "$theirs" == "{"* ]] || theirs=""
    emit "{\"section\": \"bench\", \"impl\": \"nanoGPT\", \"preset\": \"$preset\", \"result\": ${theirs:-null}}"
    [ -n "$theirs" ] && NANO["$preset:$batch"]="$theirs"
    if [ -n "$ours" ] && [ -n "$theirs" ]; then
      check bench-ratio "$PY" benchmarks/gpu_checks.py ratio "$ours" "$theirs"
    fi
  elif [ -n "$ours" ] && [ -n "${NANO[$preset:$batch]:-}" ]; then
    # a row with settings, against the plain row's nanoGPT timing of this call
    check bench-ratio "$PY" benchmarks/gpu_checks.py ratio "$ours" "${NANO[$preset:$batch]}" \
      --options "${*:3}"
  elif [ $# -eq 2 ]; then
    note bench "nanoGPT rows skipped: no --nanogpt DIR given"
  fi
}
# bench_row PRESET:BATCH[:OPTION], within the budget. A row with an option times ours alone
# and compares it with the nanoGPT timing of the plain row of the same PRESET:BATCH, when this
# call has one (list the plain row first). OPTION: muon (the presets' optimizer), fp8,
# autotune (compile_mode=max-autotune-no-cudagraphs), cudagraphs (compile_mode=reduce-overhead),
# or settings joined by + (train.fp8=true+train.micro_batch=auto)
bench_row() {
  local preset batch opt cost settings=()
  IFS=: read -r preset batch opt <<<"$1"
  case "$opt" in
    "") ;;
    muon) settings=(train.optimizer=muon) ;;
    fp8) settings=(train.fp8=true) ;;
    autotune) settings=(train.compile_mode=max-autotune-no-cudagraphs) ;;
    cudagraphs) settings=(train.compile_mode=reduce-overhead) ;;
    *=*) IFS=+ read -r -a settings <<<"$opt" ;;
  esac
  if [ -z "$opt" ]; then
    if [ "$preset" = regular ]; then cost=150; else cost=110; fi
  elif [ "$opt" = autotune ]; then cost=240
  elif [ "$preset" = regular ]; then cost=80; else cost=60; fi
  [ "$CPU" = 1 ] && cost=20
  want bench "$cost" "bench $1" || return 0
  bench_pair "$preset" "$batch" "${settings[@]}"
}
read -r -a ROWS <<<"$BENCH_ROWS"
if want env 10; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1
  env_line=$("$PY" - "$WB" 2>>"$LOG" <<'EOF'
import importlib, json, sys
import torch
mods = {}
for m in ("numpy", "tokenizers", "safetensors", "tqdm", "matplotlib", "wandb", "transformers",
          "pytest", "torchao", "triton"):
    try:
        mods[m] = getattr(importlib.import_module(m), "__version__", "yes")
    except Exception:
        mods[m] = None
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
cc = ".".join(map(str, torch.cuda.get_device_capability(0))) if gpu else None
print(json.dumps({"section": "env", "torch": torch.__version__, "cuda": torch.version.cuda,
                  "gpu": gpu, "capability": cc, "wandb_mode": sys.argv[1], "packages": mods}))
EOF
)
  if [[ "$env_line" == "{"* ]]; then emit "$env_line"; else note env "no result: see suite.log"; fi
  [ "$WB" = offline ] || note env "wandb is not installed: the runs track nothing (no W&B offline check)"
fi

if want tests 90 && has tests pytest; then
  run tests "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py
fi

if want data 40; then
  mkdir -p "$WORK"
  rm -rf "$WORK/documents.jsonl" "$WORK/tokenizer" "$WORK/data" # a kept work folder's
  run corpus "${HL[@]}" corpus sample --out "$WORK/documents.jsonl"
  if [ "$CPU" = 1 ]; then  # a slice of the corpus keeps the CPU check short
    head -n 6 "$WORK/documents.jsonl" >"$WORK/slice.jsonl" && mv "$WORK/slice.jsonl" "$WORK/documents.jsonl"
  fi
  run tokenizer "${HL[@]}" tokenizer train --corpus "$WORK/documents.jsonl" --out "$WORK/tokenizer" --vocab-size "$VOCAB"
  run prepare "${HL[@]}" prepare --corpus "$WORK/documents.jsonl" --tokenizer "$WORK/tokenizer" --out "$WORK/data"
fi

# an uninterrupted run, then one stopped by SIGTERM after its first checkpoint and resumed
if want run 90 && needs run "$WORK/data/meta.json" "token files"; then
  rm -rf "$WORK/runs/whole"
  run run-whole "${HL[@]}" train --preset "$PRESET" --run-name whole "${COMMON[@]}"
  emit "{\"section\": \"run\", \"first_step_s\": $(first_step "$WORK/logs/run-whole.log")}"
fi
if want resume 120 && needs resume "$WORK/data/meta.json" "token files" &&
  needs resume "$WORK/runs/whole" "uninterrupted run"; then
  cut_log="$WORK/cut.log"
  echo "### run-cut" >>"$LOG"
  rm -rf "$WORK/runs/cut"  # a kept work folder's earlier cut run
  "${HL[@]}" train --preset "$PRESET" --run-name cut "${COMMON[@]}" >"$cut_log" 2>&1 &
  pid=$! CHILD=$!
  until_s=$(($(date +%s) + $(limit_s)))
  while [ "$(date +%s)" -lt "$until_s" ]; do # until the step-$CUT checkpoint is written
    grep -q "saved checkpoint.*$(printf 'step-%06d' "$CUT")" "$cut_log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null
  grace=600 # tenths of a second for its checkpoint and its end: a minute, 10 s past the budget
  if spent; then grace=100; fi
  for _ in $(seq 1 "$grace"); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid"
  rc=$? CHILD=""
  cat "$cut_log" >>"$LOG"
  stopped_at=$(grep -o "saved checkpoint [^ ]*" "$cut_log" | tail -1)
  emit "{\"step\": \"run-cut\", \"rc\": $rc, \"sigterm\": true, \"last\": \"${stopped_at##*/}\"}"
  # the cut must have stopped the run before its end, or the resume below would check nothing
  if [ "$rc" != 0 ]; then
    FAILED+=(run-cut)
  elif ! grep -q "^stopped at iteration" "$cut_log"; then
    note resume "the run was not stopped by SIGTERM before its end: nothing was resumed"
    FAILED+=(run-cut)
  else
    PASSED+=(run-cut)
  fi
  run run-resumed "${HL[@]}" train --resume "$WORK/runs/cut"
  emit "{\"section\": \"resume\", \"first_step_s_after_resume\": $(first_step "$WORK/logs/run-resumed.log")}"
  # The tolerance (bf16): both runs see the same samples from the same state, but CUDA
  # kernels (split-K matmuls, atomics in the embedding's backward) round differently from run
  # to run, at bf16's resolution (2^-8 relative), and training carries that into later losses.
  # Measured on one H200 (2026-11-30; SLM, batch 16, compiled, bf16): resumed vs uninterrupted,
  # max 0.0146 (mean 0.0036) over the 20 logged steps 105-200; two uninterrupted runs (whole,
  # and cut before its SIGTERM), max 0.0247 (mean 0.0088) over steps 5-100. 0.05 is about twice
  # the largest run-to-run difference measured. The `noise` line reports that difference on
  # every call at no cost (steps up to the cut), and section `noise` measures it over the steps
  # this check compares. On the CPU with one thread both lines are exactly 0 (the slow test
  # checks that); with two threads one run on a busy machine differed by up to 6e-5.
  check resume-losses "$PY" benchmarks/gpu_checks.py losses "$WORK/runs/whole" "$WORK/runs/cut" \
    --after "$CUT" --tol "${RESUME_TOL:-0.05}"
  check noise "$PY" benchmarks/gpu_checks.py losses "$WORK/runs/whole" "$WORK/runs/cut" \
    --before "$CUT" --tol "${RESUME_TOL:-0.05}" --check noise
fi
# run-to-run noise after the cut: a second uninterrupted run, compared with the first over the
# steps the resume check compares
if want noise 90 && needs noise "$WORK/runs/whole" "uninterrupted run"; then
  rm -rf "$WORK/runs/again"
  run run-again "${HL[@]}" train --preset "$PRESET" --run-name again "${COMMON[@]}"
  check noise-after-cut "$PY" benchmarks/gpu_checks.py losses "$WORK/runs/whole" \
    "$WORK/runs/again" --after "$CUT" --tol "${RESUME_TOL:-0.05}" --check noise
fi

# the headline row early (by default SLM at batch 32 beside nanoGPT's model.py)
if [ ${#ROWS[@]} -gt 0 ]; then bench_row "${ROWS[0]}"; fi

# the launch paths uncompiled: they check the processes, not speed. Two processes where there
# are two GPUs (torchrun, NCCL, DDP; FSDP2 shards over both) and on the CPU (gloo); with one
# GPU, `--gpus 1`: torchrun with one rank, NCCL, DDP or FSDP over it
launch_procs() {
  local n=2 dev=cpu
  if [ "$CPU" = 0 ]; then
    dev=auto
    n=$("$PY" -c "import torch; print(min(2, torch.cuda.device_count()))" 2>/dev/null)
    [ "${n:-0}" -ge 1 ] 2>/dev/null || n=1
    [ "$n" = 1 ] && note "$1" "one GPU: --gpus 1 (torchrun, NCCL, one rank)"
  fi
  LAUNCH=(--gpus "$n") LAUNCH_DEV="device=$dev"
}
if want torchrun 40 && needs torchrun "$WORK/data/meta.json" "token files"; then
  rm -rf "$WORK/runs/ddp"
  launch_procs torchrun
  run torchrun "${HL[@]}" train "${LAUNCH[@]}" --preset "$PRESET" --run-name ddp "${COMMON[@]}" \
    "train.max_iters=30" "train.compile=false" "$LAUNCH_DEV"
fi
if want fsdp 40 && needs fsdp "$WORK/data/meta.json" "token files"; then
  rm -rf "$WORK/runs/fsdp"
  launch_procs fsdp
  run fsdp "${HL[@]}" train "${LAUNCH[@]}" --preset "$PRESET" --run-name fsdp "${COMMON[@]}" \
    "train.max_iters=30" "train.compile=false" "train.fsdp=true" "train.optimizer=adamw" \
    "$LAUNCH_DEV"
fi

if want eval 40 && needs eval "$WORK/runs/whole" "uninterrupted run"; then
  run eval "${HL[@]}" eval "$WORK/runs/whole" --device "$DEV" --max-tokens 20000 --gen-tokens 32 --no-track
fi
if want export 30 && needs export "$WORK/runs/whole" "uninterrupted run"; then
  run export "${HL[@]}" export "$WORK/runs/whole" --out "$WORK/export" --force
  if [ "$CPU" = 0 ] && has parity transformers; then
    check parity "$PY" benchmarks/gpu_checks.py parity "$WORK/runs/whole" "$WORK/export"
  fi
fi
if want generate 20 && needs generate "$WORK/runs/whole" "uninterrupted run"; then
  run generate "${HL[@]}" generate "$WORK/runs/whole" --device "$DEV" --prompt "It was in London, in the year" --max-new-tokens 64
fi

# the other bench rows, each beside nanoGPT's when it is given
for row in "${ROWS[@]:1}"; do bench_row "$row"; done

# -- speed options (section `speed`) ----------------------------------------------------------
if want attention 30 && [ "$CPU" = 0 ]; then
  check attention "$PY" benchmarks/gpu_checks.py attention
fi
if want muon 60; then  # one optimizer step, torch.optim.Muon's against ours (needs torch >= 2.9)
  if [ "$CPU" = 0 ]; then MP=(slm regular) MA=(); else MP=(tiny) MA=(--steps 2 --repeats 1); fi
  for p in "${MP[@]}"; do
    late muon "muon $p" && continue
    limited "$PY" benchmarks/muon_bench.py --preset "$p" --device "$DEV" "${MA[@]}"
    rc=$? lines=$OUTPUT
    if [ "$rc" = 0 ] && [[ "$lines" == "{"* ]]; then # a line for each: torch's, ours
      while read -r line; do emit "{\"section\": \"muon\", \"result\": $line}"; done <<<"$lines"
      PASSED+=("muon $p")
    else
      note muon "muon $p failed: see suite.log"
      FAILED+=("muon $p")
    fi
  done
fi
# compile modes: CUDA graphs (reduce-overhead: no launch gaps; SLM's step launches several
# hundred kernels) and autotuned kernels (max-autotune-no-cudagraphs: minutes of compilation)
for mode_cost in reduce-overhead:90 max-autotune-no-cudagraphs:240; do
  if want compile_modes "${mode_cost#*:}" "compile_mode=${mode_cost%:*}"; then
    bench_pair "$PRESET" "$ROW_BATCH" "train.compile_mode=${mode_cost%:*}"
  fi
done
if want memory 200; then
  # Regular 16x2: one forward of 32 (micro_batch=auto) and with activation checkpointing
  if [ "$CPU" = 0 ]; then P=regular B=16; else P=tiny B=8; fi
  bench_pair "$P" "$B" "--grad-accum" "2"
  bench_pair "$P" "$B" "--grad-accum" "2" "train.micro_batch=auto"
  bench_pair "$P" "$B" "--grad-accum" "2" "train.activation_checkpointing=true"
fi
if want fp8 300 && needs fp8 "$WORK/data/meta.json" "token files"; then
  rm -rf "$WORK/runs/bf16" "$WORK/runs/fp8"
  if [ "$CPU" = 0 ]; then N=1000; else N=20; fi
  FP8=(--data "$WORK/data" --out-dir "$WORK/runs" --wandb-mode disabled "train.max_iters=$N"
    "train.batch_size=$BATCH" "train.eval_interval=$((N / 4))" "train.eval_iters=$EVALI"
    "train.log_interval=10" "train.ckpt_interval=0" "train.warmup_iters=$((N / 10))" "${EXTRA[@]}")
  run fp8-off "${HL[@]}" train --preset "$PRESET" --run-name bf16 "${FP8[@]}"
  run fp8-on "${HL[@]}" train --preset "$PRESET" --run-name fp8 "${FP8[@]}" "train.fp8=true"
  check fp8-curves "$PY" benchmarks/gpu_checks.py curves "$WORK/runs/bf16" "$WORK/runs/fp8" \
    --out "$OUT" --name fp8_vs_bf16 --label-a bf16 --label-b fp8
  bench_pair "$PRESET" "$ROW_BATCH" "train.fp8=true"
fi

kept=$([ -n "${SUITE_WORK:-}" ] && echo "\"$WORK\"" || echo null) # null: removed at exit
emit "{\"section\": \"done\", \"seconds\": $(elapsed), \"budget\": $BUDGET, \"work\": $kept, \"passed\": $(json_list "${PASSED[@]}"), \"failed\": $(json_list "${FAILED[@]}"), \"skipped\": $(json_list "${SKIPPED[@]}")}"
summary() { # LABEL ITEMS...: one line of the closing summary on stderr
  local label="$1"
  shift
  printf '%s (%d):' "$label" $#
  [ $# = 0 ] || printf ' %s;' "$@"
  echo
}
{
  summary passed "${PASSED[@]}"
  summary failed "${FAILED[@]}"
  summary skipped "${SKIPPED[@]}"
} | sed 's/;$//' >&2
[ ${#FAILED[@]} = 0 ]
