#!/usr/bin/env bash
# program_flags.sh — hostile command lines for the six standalone programs.
#
#   tests/cpp/program_flags.sh BIN_DIR [PROGRAM]
#
# Runs every case below (only PROGRAM's when given) with --device cpu unless the case names a
# device. Each case is "program | flags | expectation":
#   2:WORD  exit status 2, stderr = one line "program: ..." that contains WORD, then one usage
#           line (bad flags; WORD is the flag, or "needs" for sizes whose memory does not fit)
#   ok      exit status 0, 2 or 77 and no signal (odd but possibly valid values)
#   0       exit status 0 (--help)
#   json    exit status 0 and, with --json FILE added, FILE holds valid JSON (when python3 is here)
# Any other exit status, a signal (status > 128), a timeout or a missing message is a failure.
# Exit status: 0 when every case behaved, 1 otherwise (each failure is printed).
set -u
BIN=${1:?usage: program_flags.sh BIN_DIR [PROGRAM]}
ONLY=${2:-}
PROGRAMS="flash_attention sliding_window_attention paged_attention mla_attention persistent_decode attention_variants"

CASES=()
# Common flags, for every program.
for p in $PROGRAMS; do
  CASES+=(
    "$p | --iters 0 | 2:--iters"
    "$p | --iters -1 | 2:--iters"
    "$p | --iters abc | 2:--iters"
    "$p | --iters 1e3 | 2:--iters"
    "$p | --iters 99999999999999999999 | 2:--iters"
    "$p | --warmup -1 | 2:--warmup"
    "$p | --seed -5 | 2:--seed"
    "$p | --device gpu | 2:--device"
    "$p | --dtype int8 | 2:--dtype"
    "$p | --init weird | 2:--init"
    "$p | --no-such-flag | 2:--no-such-flag"
    "$p | --iters | 2:--iters"
    "$p | --check=2 | 2:--check"
    "$p | --json /nonexistent-dir/out.json | 2:--json"
    # Accepted on a GPU machine, exit 2 / 77 without one; --small: a flag check, not the full run
    # (mla_attention's default sweep took over the 120 s limit on an H100).
    "$p | --device cuda --dtype f32 --small --iters 1 --warmup 0 | ok"
    "$p | --device cuda --small --iters 1 --warmup 0 | ok"
    "$p | --help | 0"
    "$p | --small --iters 1 --warmup 0 | json"
  )
done
CASES+=(
  # flash_attention
  "flash_attention | --heads -4 | 2:--heads"
  "flash_attention | --heads 0 | 2:--heads"
  "flash_attention | --heads 2147483648 | 2:--heads"
  "flash_attention | -b 0 | 2:--batch"
  "flash_attention | -b 99999999 | 2:--batch"
  "flash_attention | -s -1 | 2:--seqlen"
  "flash_attention | -s 0 | 2:--seqlen"
  "flash_attention | --seqlen-k -3 | 2:--seqlen-k"
  "flash_attention | -d 100 | 2:--headdim"
  "flash_attention | -d 0 | 2:--headdim"
  "flash_attention | -d 512 | 2:--headdim"
  "flash_attention | --heads 4 --kv-heads 3 | 2:--kv-heads"
  "flash_attention | --layout xyz | 2:--layout"
  "flash_attention | -b 65536 -s 4194304 --heads 1024 | 2:needs"
  "flash_attention | --small --seqlen-k 1 --causal --iters 1 --warmup 0 | ok"
  # sliding_window_attention
  "sliding_window_attention | -s 0 | 2:--seqlens"
  "sliding_window_attention | -s -1 | 2:--seqlens"
  "sliding_window_attention | -s '' | 2:--seqlens"
  "sliding_window_attention | -s 1,,2 | 2:--seqlens"
  "sliding_window_attention | -s 100000000000 | 2:--seqlens"
  "sliding_window_attention | -w -2 | 2:--windows"
  "sliding_window_attention | -w abc | 2:--windows"
  "sliding_window_attention | --heads -4 | 2:--heads"
  "sliding_window_attention | --heads 4 --kv-heads 3 | 2:--kv-heads"
  "sliding_window_attention | -d 7 | 2:--headdim"
  "sliding_window_attention | -b 0 | 2:--batch"
  "sliding_window_attention | -s 4194304 --heads 1024 -b 64 | 2:needs"
  "sliding_window_attention | --small -s 1 -w 0 --iters 1 --no-dense | ok"
  # paged_attention
  "paged_attention | --cases 0x10 | 2:--cases"
  "paged_attention | --cases 1x0 | 2:--cases"
  "paged_attention | --cases 1x10p0 | 2:--cases"
  "paged_attention | --cases 1x10q0 | 2:--cases"
  "paged_attention | --cases 1x10q11 | 2:--cases"
  "paged_attention | --cases 1x10z3 | 2:--cases"
  "paged_attention | --cases abc | 2:--cases"
  "paged_attention | --cases 1x | 2:--cases"
  "paged_attention | --cases 100000000000x1 | 2:--cases"
  "paged_attention | --cases -1x5 | 2:--cases"
  "paged_attention | -q 0 | 2:--new-tokens"
  "paged_attention | --heads 6 --kv-heads 4 | 2:--kv-heads"
  "paged_attention | -d -8 | 2:--headdim"
  "paged_attention | --kv-heads 0 | 2:--kv-heads"
  "paged_attention | --cases 65536x4194304p1 | 2:needs"
  "paged_attention | --small --cases 1x1p1,2x3p4096 --iters 1 | ok"
  # mla_attention
  "mla_attention | --part foo | 2:--part"
  "mla_attention | --part '' | 2:--part"
  "mla_attention | --forms 0x10 | 2:--forms"
  "mla_attention | --forms 1x0 | 2:--forms"
  "mla_attention | --forms 1x10h0 | 2:--forms"
  "mla_attention | --forms 1x10q0 | 2:--forms"
  "mla_attention | --forms 1x10z3 | 2:--forms"
  "mla_attention | --forms abc | 2:--forms"
  "mla_attention | --forms 1x10h2000 | 2:--forms"
  "mla_attention | --latent -5 | 2:--latent"
  "mla_attention | --latent 0 | 2:--latent"
  "mla_attention | --latent 9000 | 2:--latent"
  "mla_attention | -d 30 | 2:--headdim"
  "mla_attention | -d 0 | 2:--headdim"
  "mla_attention | --per-pair-cap -1 | 2:--per-pair-cap"
  "mla_attention | --per-pair-cap 1.5 | 2:--per-pair-cap"
  "mla_attention | --non-causal=maybe | 2:--non-causal"
  "mla_attention | --decode-batch 0 | 2:--decode-batch"
  "mla_attention | --decode-batch '' | 2:--decode-batch"
  "mla_attention | --decode-batch 1,,2 | 2:--decode-batch"
  "mla_attention | --decode-len 0 | 2:--decode-len"
  "mla_attention | --decode-len -4 | 2:--decode-len"
  "mla_attention | --decode-heads 0 | 2:--decode-heads"
  "mla_attention | --decode-heads 16,x | 2:--decode-heads"
  "mla_attention | -q 0 | 2:--new-tokens"
  "mla_attention | -q 9 | 2:--new-tokens"
  "mla_attention | --decode-len 4,100 -q 5 | 2:--new-tokens"
  "mla_attention | --block-size 0 | 2:--block-size"
  "mla_attention | --block-size -1 | 2:--block-size"
  "mla_attention | --cache-dtype int4 | 2:--cache-dtype"
  "mla_attention | --part forms --forms 65536x4194304 | 2:needs"
  "mla_attention | --part decode --decode-batch 8192 --decode-len 4194304 | 2:needs"
  "mla_attention | --part decode --decode-batch 64 --decode-len 4194304 --block-size 4096 | 2:needs"
  "mla_attention | --small --part decode --decode-len 1 --block-size 1 --iters 1 | ok"
  "mla_attention | --small --part forms --forms 1x1h1q5,1x7h2q1 --non-causal --iters 1 --check | ok"
  "mla_attention | --small --part decode --cache-dtype fp8 -q 2 --decode-batch 3 --decode-heads 1 --check | ok"
  "mla_attention | --small --part cache | 0"
  # persistent_decode
  "persistent_decode | -L -1 | 2:--context"
  "persistent_decode | -L 100000000000 | 2:--context"
  "persistent_decode | -T 0 | 2:--steps"
  "persistent_decode | -T -3 | 2:--steps"
  "persistent_decode | --page-size 0 | 2:--page-size"
  "persistent_decode | --heads 2147483648 | 2:--heads"
  "persistent_decode | --heads 4 --kv-heads 3 | 2:--kv-heads"
  "persistent_decode | -b 0 | 2:--batch"
  "persistent_decode | -d 12 | 2:--headdim"
  "persistent_decode | -b 65536 -L 4194304 | 2:needs"
  "persistent_decode | --small -L 0 -T 1 --page-size 1 --iters 1 | ok"
  "persistent_decode | --skew 101 | 2:--skew"
  "persistent_decode | --skew -1 | 2:--skew"
  "persistent_decode | --lengths 5,-1 | 2:--lengths"
  "persistent_decode | --lengths '' | 2:--lengths"
  "persistent_decode | --lengths 1,,2 | 2:--lengths"
  "persistent_decode | --lengths 4194305 | 2:--lengths"
  "persistent_decode | --cases 0x10 | 2:--cases"
  "persistent_decode | --cases 1x-5 | 2:--cases"
  "persistent_decode | --cases 2x4194305 | 2:--cases"
  "persistent_decode | --cases 2x10p4 | 2:--cases"
  "persistent_decode | --lengths 4194304 -b 65536 | 2:needs"
  "persistent_decode | --cases 65536x4194304 --skew 100 | 2:needs"
  "persistent_decode | --small --lengths 0,1,5 --page-size 2 -T 2 --iters 1 --check | ok"
  "persistent_decode | --small --cases 1x0,2x3,2x3 --skew 100 -T 1 --iters 1 --check | ok"
  "persistent_decode | --small -b 1 --lengths 7,9 --check | ok"
  # attention_variants
  "attention_variants | --block-q 0 | 2:--block-q"
  "attention_variants | --block-kv 0 | 2:--block-kv"
  "attention_variants | --gqa 0 | 2:--gqa"
  "attention_variants | --heads 4 --gqa 3 | 2:--gqa"
  "attention_variants | --doc-len 0 | 2:--doc-len"
  "attention_variants | -w -1 | 2:--window"
  "attention_variants | -s 0 | 2:--seqlen"
  "attention_variants | -s 1000000 | 2:--seqlen"
  "attention_variants | --decode-len 0 | 2:--decode-len"
  "attention_variants | --mla-heads 0 | 2:--mla-heads"
  "attention_variants | --page-size 0 | 2:--page-size"
  "attention_variants | --mla-len -2 | 2:--mla-len"
  "attention_variants | --small --decode-batch 65536 --decode-len 4194304 | 2:needs"
)

JSON=$(mktemp)
trap 'rm -f "$JSON"' EXIT
ran=0 failed=0
for c in "${CASES[@]}"; do
  IFS='|' read -r prog flags expect <<<"$c"
  prog=$(echo $prog) expect=$(echo $expect) flags=${flags# } flags=${flags% }
  [ -n "$ONLY" ] && [ "$prog" != "$ONLY" ] && continue
  case " $flags " in *" --device "*) dev=() ;; *) dev=(--device cpu) ;; esac
  eval "args=($flags)"
  [ "$expect" = json ] && args+=(--json "$JSON")
  err=$(timeout 120 "$BIN/$prog" "${dev[@]}" "${args[@]}" 2>&1 >/dev/null)
  rc=$?
  ran=$((ran + 1))
  why=""
  if [ "$expect" = ok ]; then
    case $rc in 0 | 2 | 77) ;; *) why="exit status $rc (0, 2 or 77 expected)" ;; esac
  elif [ "$expect" = 0 ] || [ "$expect" = json ]; then
    if [ $rc -ne 0 ]; then why="exit status $rc, 0 expected"
    elif [ "$expect" = json ] && command -v python3 >/dev/null &&
         ! python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["rows"] and d["status"] == 0' "$JSON"; then
      why="--json did not write valid JSON with rows"
    fi
  else
    word=${expect#2:}
    first=$(printf '%s\n' "$err" | head -n 1)
    lines=$(printf '%s\n' "$err" | grep -c .)
    if [ $rc -ne 2 ]; then why="exit status $rc, 2 expected"
    elif [ "${first#"$prog: "}" = "$first" ]; then why="message does not start with '$prog: '"
    elif [[ "$first" != *"$word"* ]]; then why="message does not mention '$word'"
    elif [ "$lines" -ne 2 ]; then why="$lines lines on stderr, 2 expected (message + usage)"
    fi
  fi
  if [ -n "$why" ]; then
    failed=$((failed + 1))
    echo "FAIL $prog ${dev[*]} $flags: $why"
    printf '%s\n' "$err" | head -n 5 | sed 's/^/    /'
  fi
done
echo "program_flags: $ran cases${ONLY:+ of $ONLY}, $failed failed"
[ "$ran" -gt 0 ] && [ "$failed" -eq 0 ]
