#!/usr/bin/env bash
# The action's image, measured (issue 14): its size, the time from `docker run` to
# flightplan's first line, and a job's cold start both ways: building the Dockerfile from
# source (what `runs.image: Dockerfile` makes every job do) against starting the built image
# (what a release's `docker://` image costs once pulled).
#
#   bench/action-image.sh                 size + first line + migrate status (image reused)
#   COLD_BUILD=1 bench/action-image.sh    also a `docker build --no-cache` (minutes)
#
# Needs what scripts/action-image needs, and PostgreSQL at 127.0.0.1:5432 (trust auth).
# Results go to bench/work/action-image/<timestamp>/summary.md and stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-20}
tag=$(scripts/action-image flightplan:bench)
out=bench/work/action-image/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
{
  echo "date: $(date -u +%FT%TZ)"; echo "host: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"; docker version -f 'docker {{.Server.Version}}'
} > "$out/machine.txt"

size=$(docker image inspect -f '{{.Size}}' "$tag")
pg=$(docker run --rm --entrypoint /usr/lib/postgresql/15/bin/pg_dump "$tag" --version 2>/dev/null \
     || docker run --rm --entrypoint /usr/lib/postgresql/17/bin/pg_dump "$tag" --version)

# A workspace with the worked example, as a checkout has it.
ws=$(mktemp -d); trap 'rm -rf "$ws"' EXIT
cp -r examples/secure2send/migrations "$ws/migrations"
printf 'app = "secure2send"\n[migrate]\ndir = "migrations"\n' > "$ws/flightplan.toml"
db=flightplan_bench_image
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"

# Milliseconds from spawning `docker run` to the first line on stdout or stderr, and to exit.
python3 - "$tag" "$ws" "$db" "$REPS" > "$out/first-line.tsv" <<'PY'
import os, selectors, subprocess, sys, time
tag, ws, db, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
runner = ["docker", "run", "--rm", "--workdir", "/github/workspace", "--network", "host",
          "-e", "GITHUB_ACTIONS=true", "-e", "CI=true", "-e", "DATABASE_URL",
          "-e", "INPUT_COMMAND", "-e", "INPUT_ARGS", "-v", f"{ws}:/github/workspace", tag]
env = dict(os.environ, DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}?sslmode=disable")
def once(inputs, extra):
    e = dict(env, **inputs)
    t0 = time.monotonic()
    p = subprocess.Popen(runner + extra, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    sel.register(p.stderr, selectors.EVENT_READ)
    first, open_ = None, 2
    while open_:
        for key, _ in sel.select():
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_ -= 1
            elif first is None:
                first = time.monotonic()
    p.wait()
    end = time.monotonic()
    assert p.returncode == 0, (inputs, p.returncode)
    return (first - t0) * 1000, (end - t0) * 1000
print("case\trep\tfirst_line_ms\texit_ms")
cases = [("version", {"INPUT_COMMAND": "", "INPUT_ARGS": ""}, ["--version"]),
         ("migrate-status", {"INPUT_COMMAND": "migrate", "INPUT_ARGS": "status"}, [])]
for case, inputs, extra in cases:
    for rep in range(reps):
        f, x = once(inputs, extra)
        print(f"{case}\t{rep}\t{f:.0f}\t{x:.0f}", flush=True)
PY
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db"

cold=""
if [ "${COLD_BUILD:-}" = 1 ]; then
  # What a job on `runs.image: Dockerfile` does before flightplan's first line (the base
  # images present, as they are on GitHub's runners after a pull).
  args=$(docker image inspect flightplan-base/rust:bookworm >/dev/null 2>&1 \
    && echo "--build-arg RUST_IMAGE=flightplan-base/rust:bookworm --build-arg DEBIAN_IMAGE=flightplan-base/debian:bookworm --build-arg PG_SOURCE=debian --build-arg PG_MAJOR=15" || true)
  t0=$(date +%s)
  # shellcheck disable=SC2086
  docker build --no-cache -q -t flightplan:bench-cold $args . > "$out/cold-build.log" 2>&1
  cold=$(( $(date +%s) - t0 ))
fi

python3 - "$out" "$size" "$pg" "$cold" <<'PY' | tee "$out/summary.md"
import csv, statistics, sys
out, size, pg, cold = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = list(csv.DictReader(open(f"{out}/first-line.tsv"), delimiter="\t"))
print(f"image: {size/1e6:.1f} MB uncompressed; {pg.strip()}")
print("| case | runs | first line, median (ms) | max (ms) | exit, median (ms) |")
print("|---|---:|---:|---:|---:|")
for case in ["version", "migrate-status"]:
    r = [x for x in rows if x["case"] == case]
    f = [float(x["first_line_ms"]) for x in r]; e = [float(x["exit_ms"]) for x in r]
    print(f"| {case} | {len(r)} | {statistics.median(f):.0f} | {max(f):.0f} | {statistics.median(e):.0f} |")
if cold:
    print(f"cold start from source (docker build --no-cache, bases present): {cold} s before the first line")
print(open(f"{out}/machine.txt").read().strip())
PY
