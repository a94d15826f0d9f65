#!/usr/bin/env python3
"""Corpora for the goal rows that the 100-migration corpus does not cover.

    python3 gen_extra.py many  --n 10000 --out work/many10k   # N tiny files (ledger of N rows)
    python3 gen_extra.py big   --mb 50   --out work/big50     # one migration file of MB MiB

`many`: N files NNNNN_step.sql, each one statement (`SELECT <i>;`), in the flat layout
(flat/) flightplan reads. Applying them once gives a tracking table of N rows, which
`migrate status` then reads.

`big`: one file of exactly MB MiB: a CREATE TABLE and INSERT statements of 1,000 rows
each (about 100 KB per statement), written to flat/ and sqlx/ (sqlx wants a numeric
version prefix). The server stores about MB MiB of rows.

Output is deterministic (no randomness).
"""
import argparse
import os
import shutil


def many(n, out):
    os.makedirs(f"{out}/flat")
    width = max(4, len(str(n)))
    for i in range(1, n + 1):
        with open(f"{out}/flat/{i:0{width}d}_step.sql", "w", newline="\n") as f:
            f.write(f"SELECT {i};\n")
    print(f"wrote {n} one-statement migrations to {out}/flat/")


def big(mb, out):
    target = mb * 1024 * 1024
    head = "CREATE TABLE big_rows (\n    id bigint PRIMARY KEY,\n    label text NOT NULL,\n    payload text NOT NULL\n);\n\n"
    parts, size, row_id, written = [head], len(head), 0, 0
    filler = "x" * 60
    while True:
        rows = []
        for _ in range(1000):
            row_id += 1
            rows.append(f"({row_id}, 'row {row_id:09d}', '{filler}')")
        stmt = "INSERT INTO big_rows (id, label, payload) VALUES\n" + ",\n".join(rows) + ";\n\n"
        if size + len(stmt) > target:
            break
        parts.append(stmt)
        size += len(stmt)
        written = row_id
    # Pad to the exact size with a comment (stays a valid file).
    pad = target - size
    if pad > 0:
        parts.append(("-" * max(pad - 1, 0)) + "\n" if pad >= 3 else "\n" * pad)
    text = "".join(parts)
    assert len(text.encode()) == target, (len(text.encode()), target)
    for layout, name in (("flat", "0001_big_rows.sql"), ("sqlx", "20240101000100_big_rows.sql")):
        os.makedirs(f"{out}/{layout}")
        with open(f"{out}/{layout}/{name}", "w", newline="\n") as f:
            f.write(text)
    print(f"wrote one {target} byte migration ({written} rows in {written // 1000} INSERTs) to {out}/flat and {out}/sqlx")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["many", "big"])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if os.path.isdir(a.out):
        shutil.rmtree(a.out)
    if a.kind == "many":
        many(a.n, a.out)
    else:
        big(a.mb, a.out)


if __name__ == "__main__":
    main()
