#!/usr/bin/env bash
# flightplan's migration benchmark. From a clean checkout, ONE command:
#
#     bench/run.sh
#
# It builds flightplan (cargo build --release), generates the corpus (gen_corpus.py,
# seed 42: 100 migrations, 327 statements), installs the peer runners into bench/work/
# (npm: dbmate, drizzle-kit, node-pg-migrate from package-lock.json; cargo: sqlx-cli
# 0.9.0), starts latency_proxy.py, and times flightplan against the peers in the same
# run: for each delay D (added round-trip ms), rep and tool: createdb, apply the corpus,
# run again with nothing pending (no-op), check the schema, dropdb. Then the goal rows
# of issue 7 that the 100-migration corpus does not cover (EXTRAS): TLS round trips,
# peak memory, `migrate status` over a 10,000-row ledger. It prints the table (medians,
# ratios, round trips counted by the proxy) and the goals, met or not.
#
# Method and proxy are those of ../shared/bench (PEER-RESULTS.md), so numbers compare.
#
# Environment (all optional):
#   REPS=5                 reps per cell (median reported)
#   DELAYS="0 20"          added round-trip times in ms; 0 = direct to 5432
#   TOOLS="psql_onequery flightplan sqlx dbmate drizzle node_pg_migrate"
#                          also available: psql_1tx psql_perfile. Only the tools listed
#                          are installed: TOOLS="psql_onequery flightplan" needs nothing
#                          but cargo, python3 and psql.
#   EXTRAS="tls memory status"   goal rows beyond the corpus table; EXTRAS= skips them
#                          (their sqlx-cli comparison rows run only if sqlx is installed)
#   EXTRA_REPS=3           reps for the EXTRAS cases
#   TRACE=1                log every client->server message through the proxy to
#                          $OUT/trace_dD.log (and $OUT/trace_tls.log)
#   PROXY_PORT=16543       PGPORT=5432  (PostgreSQL at 127.0.0.1, user postgres, trust)
#   FLIGHTPLAN=path        use this binary instead of building one
#   VARIANTS="name=path ..."   also time other flightplan builds, as tools fp_NAME, in the
#                          same reps (to check an engine change against the current one)
#   OUT=bench/work/results/<timestamp>   (bench/work/results/latest points at the last run)
#
# Scratch databases are named fpbench_*; each is dropped after its run, and any left over
# (an interrupted run) are dropped on exit.
set -uo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH")
WORK=$BENCH/work
mkdir -p "$WORK"
cd "$WORK" || exit 1

REPS=${REPS:-5}
DELAYS=${DELAYS:-"0 20"}
TOOLS=${TOOLS:-"psql_onequery flightplan sqlx dbmate drizzle node_pg_migrate"}
EXTRAS=${EXTRAS-"tls memory status"}
EXTRA_REPS=${EXTRA_REPS:-3}
PROXY_PORT=${PROXY_PORT:-16543}
TRACE=${TRACE:-}
PGPORT_DIRECT=${PGPORT:-5432}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$WORK/results/$STAMP}
export PGHOST=127.0.0.1 PGUSER=postgres PGSSLMODE=disable
unset PGPORT PGDATABASE
NPM_DIR=$WORK/npm
BIN=$NPM_DIR/node_modules/.bin
SQLX=${SQLX:-$WORK/tools/cargo/bin/sqlx}
SQLX_VERSION=0.9.0
DBMATE=${DBMATE:-$NPM_DIR/node_modules/@dbmate/linux-x64/bin/dbmate}  # the native binary, not the node wrapper
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
NO_NOOP=${NO_NOOP:-"psql_1tx psql_perfile"}
say() { printf '\n== %s\n' "$*"; }

# ---- tools: each runs the corpus against $URL / port $PORT / database $DB (as ../shared/bench) ----
apply_psql_onequery() { "${PSQL[@]}" -p "$PORT" -d "$DB" -c "$(cat corpus/all.sql)"; }  # one Query message
noop_psql_onequery()  { "${PSQL[@]}" -p "$PORT" -d "$DB" -c "select 1"; }  # floor: connect + 1 query
apply_psql_1tx()      { "${PSQL[@]}" -p "$PORT" -d "$DB" -1 -f corpus/all.sql; }  # one Query per statement
apply_psql_perfile()  { for f in corpus/flat/*.sql; do "${PSQL[@]}" -p "$PORT" -d "$DB" -1 -f "$f" || return 1; done; }
apply_sqlx()          { "$SQLX" migrate run --source corpus/sqlx --database-url "$URL"; }
apply_dbmate()        { "$DBMATE" --url "$URL" --migrations-dir corpus/dbmate --no-dump-schema migrate; }
apply_drizzle()       { DATABASE_URL="$URL" "$BIN/drizzle-kit" migrate --config drizzle.config.js; }
apply_flightplan()    { DATABASE_URL="$URL" "$FLIGHTPLAN" migrate apply --dir corpus/flat; }
apply_node_pg_migrate() { DATABASE_URL="$URL" "$BIN/node-pg-migrate" up -m corpus/flat --no-verbose; }
for spec in ${VARIANTS:-}; do  # other flightplan builds: tool fp_NAME runs the binary at PATH
  name=${spec%%=*}; path=${spec#*=}
  [ -x "$path" ] || { echo "VARIANTS: no executable at $path"; exit 1; }
  eval "apply_fp_${name}() { DATABASE_URL=\"\$URL\" $(printf '%q' "$path") migrate apply --dir corpus/flat; }"
  TOOLS="$TOOLS fp_$name"
done

# ---- helpers ----
needs() { [[ " $TOOLS " == *" $1 "* ]]; }
extra() { [[ " $EXTRAS " == *" $1 "* ]]; }
now() { echo "$EPOCHREALTIME"; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
createdb_() { dropdb --if-exists -p "$PGPORT_DIRECT" "$1" 2>/dev/null; createdb -p "$PGPORT_DIRECT" "$1"; }
dropdb_() { dropdb --if-exists -p "$PGPORT_DIRECT" "$1"; }
q() { psql -X -At -p "$PGPORT_DIRECT" "$@"; }

PROXY_PID=
start_proxy() {  # start_proxy D STATS [TRACEFILE]: proxy on $PROXY_PORT, sets PROXY_PID
  python3 "$BENCH/latency_proxy.py" --port "$PROXY_PORT" --delay-ms "$1" --stats "$2" \
    ${3:+--trace "$3"} >"$OUT/logs/proxy_$(basename "$2" .json).log" 2>&1 &
  PROXY_PID=$!
  for _ in $(seq 50); do  # wait until it listens
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $PROXY_PORT), 0.2).close()" 2>/dev/null && break
    sleep 0.1
  done
  sleep 0.2
}
stop_proxy() { if [ -n "$PROXY_PID" ]; then kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; PROXY_PID=; fi; }
stats() {  # "connections round_trips c2s_chunks c2s_bytes s2c_bytes" from the proxy, once idle
  [ -z "$STATS" ] && { echo "- - - - -"; return; }
  python3 - "$STATS" <<'EOF'
import json, sys, time
for _ in range(200):
    s = json.load(open(sys.argv[1]))
    if s["open"] == 0:
        break
    time.sleep(0.01)
print(s["connections"], s["round_trips"], s["c2s_chunks"], s["c2s_bytes"], s["s2c_bytes"])
EOF
}
cleanup() {
  stop_proxy
  for db in $(q -d postgres -c "select datname from pg_database where datname like 'fpbench\_%'" 2>/dev/null); do
    dropdb_ "$db"
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

schema_count() {  # relations, types and functions in public, less the tools' own tables
  q -d "$DB" -c "select (select count(*) from pg_class where relnamespace = 'public'::regnamespace
      and relname not in ('schema_migrations', 'schema_migrations_pkey', '_sqlx_migrations', '_sqlx_migrations_pkey',
                          'pgmigrations', 'pgmigrations_pkey', 'pgmigrations_id_seq',
                          '_migrations', '_migrations_pkey', '_migrations_filename_key', '_migrations_id_seq'))
    + (select count(*) from pg_proc where pronamespace = 'public'::regnamespace)
    + (select count(*) from pg_type where typnamespace = 'public'::regnamespace and typtype = 'e')"
}
ledger_ok() {  # flightplan only: N applied rows, each with a checksum and a server-side execution time
  q -d "$DB" -c "select count(*) from _migrations where status = 'applied' and checksum is not null and execution_ms is not null"
}
run_measured() {  # run_measured LOG CMD...: runs CMD; sets RC, SECONDS_, DELTA[] (proxy counters), RSS_KB (max RSS of a command)
  local log=$1; shift
  local before after t0 t1 i
  before=($(stats)); t0=$(now)
  if declare -F "$1" >/dev/null; then  # a tool function: timed in this shell, as ../shared/bench does
    "$@" >"$log" 2>&1; RC=$?
  else                                 # a command: also its peak RSS
    /usr/bin/time -f '%M' -o "$log.rss" "$@" >"$log" 2>&1; RC=$?
  fi
  t1=$(now); after=($(stats))
  SECONDS_=$(secs "$t0" "$t1")
  RSS_KB=$(tail -n1 "$log.rss" 2>/dev/null | grep -Eo '^[0-9]+$' || echo -); rm -f "$log.rss"
  DELTA=()
  for i in 0 1 2 3 4; do
    [ "${after[$i]}" = - ] && DELTA+=(-) || DELTA+=($((after[i] - before[i])))
  done
}
timed() {  # timed PHASE TOOL REP: run the phase, append one row to raw.tsv
  local phase=$1 tool=$2 rep=$3 fn="${1}_${2}" log="$OUT/logs/${2}_d${D}_r${3}_${1}.log"
  if [ "$phase" = noop ] && ! declare -F "$fn" >/dev/null; then
    [[ " $NO_NOOP " == *" $tool "* ]] && return
    fn="apply_$tool"
  fi
  [ -n "$TRACE" ] && [ "$D" != 0 ] && echo "### $tool rep $rep $phase" >>"$TRACE_FILE"
  run_measured "$log" "$fn"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$D" "$tool" "$rep" "$phase" "$SECONDS_" \
    "${DELTA[@]}" "$RC" >>"$OUT/raw.tsv"
  printf 'D=%-3s %-16s rep %s %-5s %7ss  rc=%s  conns=%s round_trips=%s\n' "$D" "$tool" "$rep" "$phase" "$SECONDS_" \
    "$RC" "${DELTA[0]}" "${DELTA[1]}"
  [ "$RC" = 0 ] || tail -5 "$log"
}
xrow() {  # xrow CASE VARIANT REP: append the last run_measured to extras.tsv
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$SECONDS_" "$RSS_KB" "${DELTA[0]}" "${DELTA[1]}" "$RC" \
    >>"$OUT/extras.tsv"
  printf '%-22s %-10s rep %s %8ss  max_rss=%6s KB  rc=%s  conns=%s round_trips=%s\n' "$1" "$2" "$3" "$SECONDS_" \
    "$RSS_KB" "$RC" "${DELTA[0]}" "${DELTA[1]}"
  [ "$RC" = 0 ] || tail -5 "$LOG"
}

# ---- setup ----
mkdir -p "$OUT/logs"
ln -sfn "$OUT" "$WORK/results/latest" 2>/dev/null || true
for f in gen_corpus.py gen_extra.py latency_proxy.py summarize.py package.json package-lock.json drizzle.config.js; do
  [ -f "$BENCH/$f" ] || { echo "missing bench/$f"; exit 1; }
done
cp "$BENCH/drizzle.config.js" "$WORK/"  # drizzle-kit resolves ./corpus/drizzle from here
for c in psql createdb dropdb python3 /usr/bin/time; do
  command -v "$c" >/dev/null || { echo "needs $c"; exit 1; }
done
q -d postgres -c 'select 1' >/dev/null || { echo "PostgreSQL is not reachable at 127.0.0.1:$PGPORT_DIRECT as postgres"; exit 1; }

SQLX_PID=
if needs sqlx && [ ! -x "$SQLX" ]; then
  # Slow (minutes on 2 cores): in the background while flightplan builds.
  say "installing sqlx-cli $SQLX_VERSION into bench/work/tools/cargo (background)"
  cargo install sqlx-cli --version "$SQLX_VERSION" --no-default-features --features postgres,rustls \
    --root "$WORK/tools/cargo" >"$OUT/logs/sqlx-install.log" 2>&1 &
  SQLX_PID=$!
fi

if [ -z "${FLIGHTPLAN:-}" ]; then
  say "building flightplan (cargo build --release; waits if another build holds the target dir)"
  (cd "$ROOT" && cargo build --release) || { echo "cargo build --release failed"; exit 1; }
  TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  # A copy: the shared target dir may be rebuilt by someone else while the benchmark runs.
  cp "$TARGET_DIR/release/flightplan" "$OUT/flightplan" || exit 1
  FLIGHTPLAN=$OUT/flightplan
fi
[ -x "$FLIGHTPLAN" ] || { echo "no flightplan binary at $FLIGHTPLAN"; exit 1; }

if needs dbmate || needs drizzle || needs node_pg_migrate; then
  if [ ! -x "$DBMATE" ] || [ ! -x "$BIN/drizzle-kit" ] || [ ! -x "$BIN/node-pg-migrate" ] \
     || ! cmp -s "$BENCH/package-lock.json" "$NPM_DIR/package-lock.json"; then
    say "installing the npm peers into bench/work/npm (npm ci)"
    rm -rf "$NPM_DIR"; mkdir -p "$NPM_DIR"
    cp "$BENCH/package.json" "$BENCH/package-lock.json" "$NPM_DIR/"
    # The lock lists dbmate's per-platform packages as optional dependencies but holds an
    # entry only for linux-x64 (the registry here has no other platform), so `npm ci`
    # refuses it as out of sync. `npm install` then installs exactly the locked versions;
    # the cmp below proves the lock was not changed.
    if ! (cd "$NPM_DIR" && npm ci --no-audit --no-fund >"$OUT/logs/npm.log" 2>&1); then
      echo "npm ci refused the lock (see logs/npm.log); npm install with the same lock"
      (cd "$NPM_DIR" && npm install --no-audit --no-fund >>"$OUT/logs/npm.log" 2>&1) || { echo "npm install failed"; exit 1; }
      cmp -s "$BENCH/package-lock.json" "$NPM_DIR/package-lock.json" || { echo "npm changed the lock file: versions differ"; exit 1; }
    fi
  fi
fi

if [ -n "$SQLX_PID" ]; then
  say "waiting for cargo install sqlx-cli"
  wait "$SQLX_PID" || { echo "cargo install sqlx-cli failed (see $OUT/logs/sqlx-install.log)"; exit 1; }
fi

python3 "$BENCH/gen_corpus.py" --n 100 --seed 42 --out corpus >/dev/null
read -r N_MIG N_STMT <<<"$(python3 -c 'import json; m=json.load(open("corpus/manifest.json")); print(m["migrations"], m["statements"])')"
[ "$N_MIG/$N_STMT" = 100/327 ] || { echo "corpus is $N_MIG migrations / $N_STMT statements, expected 100/327"; exit 1; }

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
  echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "memory: $(free -m | awk '/^Mem:/ {print $2}') MB"
  echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "postgresql: $(q -d postgres -c 'show server_version') (ssl=$(q -d postgres -c 'show ssl'))"
  echo "flightplan: $("$FLIGHTPLAN" --version)"
  needs sqlx && echo "sqlx-cli: $("$SQLX" --version 2>&1 | head -1)"
  needs dbmate && echo "dbmate: $("$DBMATE" --version 2>&1)"
  for p in drizzle-kit node-pg-migrate; do
    [ -f "$NPM_DIR/node_modules/$p/package.json" ] && echo "$p: $(node -p "require('$NPM_DIR/node_modules/$p/package.json').version")"
  done
  echo "rustc: $(rustc --version)"; command -v node >/dev/null && echo "node: $(node --version)"
  echo "python: $(python3 --version)"
  echo "corpus: $N_MIG migrations, $N_STMT statements (gen_corpus.py, seed 42)"
  echo "REPS=$REPS DELAYS=\"$DELAYS\" TOOLS=\"$TOOLS\" EXTRAS=\"$EXTRAS\" EXTRA_REPS=$EXTRA_REPS"
} | tee "$OUT/machine.txt"

# ---- the corpus table (the method of ../shared/bench/run_bench.sh) ----
printf 'delay_ms\ttool\trep\tphase\tseconds\tconnections\tround_trips\tc2s_chunks\tc2s_bytes\ts2c_bytes\trc\n' >"$OUT/raw.tsv"
printf 'case\tvariant\trep\tseconds\tmax_rss_kb\tconnections\tround_trips\trc\n' >"$OUT/extras.tsv"
DB=fpbench_expected; createdb_ "$DB"
"${PSQL[@]}" -p "$PGPORT_DIRECT" -d "$DB" -1 -f corpus/all.sql && EXPECTED=$(schema_count); dropdb_ "$DB"
echo "corpus: $N_MIG migrations, $N_STMT statements, $EXPECTED schema objects"

for D in $DELAYS; do
  PORT=$PGPORT_DIRECT; STATS=
  say "D=$D ms"
  if [ "$D" != 0 ]; then
    STATS=$OUT/proxy_d$D.json
    TRACE_FILE=$OUT/trace_d$D.log
    start_proxy "$D" "$STATS" ${TRACE:+"$TRACE_FILE"}
    PORT=$PROXY_PORT
  fi
  for rep in $(seq 1 "$REPS"); do
    for tool in $TOOLS; do
      DB=fpbench_${tool}_d${D}_r${rep}
      URL="postgres://postgres@127.0.0.1:$PORT/$DB?sslmode=disable"
      createdb_ "$DB"
      timed apply "$tool" "$rep"
      timed noop "$tool" "$rep"
      got=$(schema_count)
      [ "$got" = "$EXPECTED" ] || echo "!! $tool D=$D rep $rep: schema has $got objects, expected $EXPECTED" | tee -a "$OUT/errors.txt"
      if [ "$tool" = flightplan ] || [[ "$tool" == fp_* ]]; then
        rows=$(ledger_ok)
        [ "$rows" = "$N_MIG" ] || echo "!! $tool D=$D rep $rep: $rows complete ledger rows, expected $N_MIG" | tee -a "$OUT/errors.txt"
      fi
      dropdb_ "$DB"
    done
  done
  stop_proxy
done

# ---- EXTRAS: the other goal rows of issue 7 ----
STATS=
if extra tls; then
  say "TLS: sslmode=disable vs require through the 20 ms proxy (server ssl=$(q -d postgres -c 'show ssl'))"
  if [ "$(q -d postgres -c 'show ssl')" != on ]; then
    echo "the server has ssl=off: TLS case skipped" | tee -a "$OUT/errors.txt"
  else
    STATS=$OUT/proxy_tls.json
    start_proxy 20 "$STATS" ${TRACE:+"$OUT/trace_tls.log"}
    for rep in $(seq 1 "$EXTRA_REPS"); do
      for mode in disable require; do
        LOG=$OUT/logs/tls_psql_${mode}_r$rep.log
        run_measured "$LOG" env PGSSLMODE=$mode psql -X -q -p "$PROXY_PORT" -d postgres -c 'select 1'
        xrow tls_psql_connect "$mode" "$rep"
        if [ -x "$SQLX" ]; then  # a peer on the same driver (sqlx-core 0.9.0): its no-op, applied directly first
          DB=fpbench_tls_sqlx_${mode}_r$rep; createdb_ "$DB"
          "$SQLX" migrate run --source corpus/sqlx --database-url "postgres://postgres@127.0.0.1:$PGPORT_DIRECT/$DB?sslmode=disable" >/dev/null 2>&1
          LOG=$OUT/logs/tls_sqlx_${mode}_r${rep}_noop.log
          run_measured "$LOG" "$SQLX" migrate run --source corpus/sqlx --database-url "postgres://postgres@127.0.0.1:$PROXY_PORT/$DB?sslmode=$mode"
          xrow tls_sqlx_noop "$mode" "$rep"
          dropdb_ "$DB"
        fi
        for spec in "flightplan=$FLIGHTPLAN" ${VARIANTS:-}; do
          name=${spec%%=*}; bin=${spec#*=}; [ "$name" = flightplan ] || name=fp_$name
          DB=fpbench_tls_${name}_${mode}_r$rep; createdb_ "$DB"
          URL="postgres://postgres@127.0.0.1:$PROXY_PORT/$DB?sslmode=$mode"
          LOG=$OUT/logs/tls_${name}_${mode}_r${rep}_apply.log
          run_measured "$LOG" env DATABASE_URL="$URL" "$bin" migrate apply --dir corpus/flat
          xrow "tls_${name}_apply" "$mode" "$rep"
          LOG=$OUT/logs/tls_${name}_${mode}_r${rep}_noop.log
          run_measured "$LOG" env DATABASE_URL="$URL" "$bin" migrate apply --dir corpus/flat
          xrow "tls_${name}_noop" "$mode" "$rep"
          [ "$(ledger_ok)" = "$N_MIG" ] || echo "!! TLS $name $mode rep $rep: ledger incomplete" | tee -a "$OUT/errors.txt"
          dropdb_ "$DB"
        done
      done
    done
    stop_proxy; STATS=
  fi
fi

if extra memory; then
  say "peak memory (max RSS, /usr/bin/time), direct to 5432"
  python3 "$BENCH/gen_corpus.py" --n 1000 --seed 42 --out corpus1000 | tee "$OUT/logs/corpus1000.txt"
  python3 "$BENCH/gen_extra.py" big --mb 50 --out big50 | tee "$OUT/logs/big50.txt"
  for rep in $(seq 1 "$EXTRA_REPS"); do
    for tool in flightplan sqlx; do
      [ "$tool" = sqlx ] && [ ! -x "$SQLX" ] && continue
      DB=fpbench_mem1000_${tool}_r$rep; createdb_ "$DB"; URL="postgres://postgres@127.0.0.1:$PGPORT_DIRECT/$DB?sslmode=disable"
      LOG=$OUT/logs/mem1000_${tool}_r${rep}.log
      if [ "$tool" = flightplan ]; then
        run_measured "$LOG" env DATABASE_URL="$URL" "$FLIGHTPLAN" migrate apply --dir corpus1000/flat
        xrow mem_1000_apply "$tool" "$rep"
        [ "$(ledger_ok)" = 1000 ] || echo "!! 1000-migration corpus: ledger incomplete" | tee -a "$OUT/errors.txt"
        run_measured "$LOG.noop" env DATABASE_URL="$URL" "$FLIGHTPLAN" migrate apply --dir corpus1000/flat
        xrow mem_1000_noop "$tool" "$rep"
      else
        run_measured "$LOG" "$SQLX" migrate run --source corpus1000/sqlx --database-url "$URL"
        xrow mem_1000_apply "$tool" "$rep"
      fi
      dropdb_ "$DB"
      DB=fpbench_big50_${tool}_r$rep; createdb_ "$DB"; URL="postgres://postgres@127.0.0.1:$PGPORT_DIRECT/$DB?sslmode=disable"
      LOG=$OUT/logs/big50_${tool}_r${rep}.log
      if [ "$tool" = flightplan ]; then
        run_measured "$LOG" env DATABASE_URL="$URL" "$FLIGHTPLAN" migrate apply --dir big50/flat
      else
        run_measured "$LOG" "$SQLX" migrate run --source big50/sqlx --database-url "$URL"
      fi
      xrow mem_big50_apply "$tool" "$rep"
      dropdb_ "$DB"
    done
  done
fi

if extra status; then
  say "migrate status over a 10,000-row ledger"
  python3 "$BENCH/gen_extra.py" many --n 10000 --out many10k | tee "$OUT/logs/many10k.txt"
  DB=fpbench_status10k; createdb_ "$DB"
  URL="postgres://postgres@127.0.0.1:$PGPORT_DIRECT/$DB?sslmode=disable"
  LOG=$OUT/logs/status10k_apply.log
  run_measured "$LOG" env DATABASE_URL="$URL" "$FLIGHTPLAN" migrate apply --dir many10k/flat
  xrow status10k_first_apply flightplan 1
  [ "$(ledger_ok)" = 10000 ] || echo "!! 10k ledger: $(ledger_ok) complete rows, expected 10000" | tee -a "$OUT/errors.txt"
  for D in $DELAYS; do
    PORT=$PGPORT_DIRECT; STATS=
    if [ "$D" != 0 ]; then STATS=$OUT/proxy_status_d$D.json; start_proxy "$D" "$STATS"; PORT=$PROXY_PORT; fi
    URL="postgres://postgres@127.0.0.1:$PORT/$DB?sslmode=disable"
    for rep in $(seq 1 "$EXTRA_REPS"); do
      LOG=$OUT/logs/status10k_d${D}_r$rep.log
      run_measured "$LOG" env DATABASE_URL="$URL" "$FLIGHTPLAN" migrate status --dir many10k/flat
      xrow "status10k_d$D" flightplan "$rep"
      LOG=$OUT/logs/status10k_noop_d${D}_r$rep.log
      run_measured "$LOG" env DATABASE_URL="$URL" "$FLIGHTPLAN" migrate apply --dir many10k/flat
      xrow "noop10k_d$D" flightplan "$rep"
    done
    stop_proxy; STATS=
  done
  dropdb_ "$DB"
fi

say "results ($OUT)"
python3 "$BENCH/summarize.py" "$OUT" | tee "$OUT/summary.md"
[ -s "$OUT/errors.txt" ] && { echo; echo "ERRORS:"; cat "$OUT/errors.txt"; exit 1; }
exit 0
