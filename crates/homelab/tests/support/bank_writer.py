"""Moves money between accounts in a WAL-mode SQLite database until a stop file appears.

The total never changes, so any copy taken at a consistent point sums to the same amount.
Each transfer also bumps `meta.transfers` in the same transaction: a copy that shows a count
lower than one committed before the copy began is stale.
Usage: bank_writer.py DB STOP_FILE STATS_JSON [no-checkpoint]
With no-checkpoint, SQLite never moves the WAL into the main file, so a copy of the main file
alone would miss every transfer.
Writes {"writes", "failures", "latencies_ms", "started_at"} to STATS_JSON when stopped
(started_at: Unix time of each write, for picking out a window).
"""

import json
import os
import random
import sqlite3
import sys
import time


def main() -> None:
    db, stop_file, stats_file = sys.argv[1:4]
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    if sys.argv[4:] == ["no-checkpoint"]:
        con.execute("PRAGMA wal_autocheckpoint=0")
    has_meta = con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'meta'").fetchone()[0]
    accounts = con.execute("SELECT count(*) FROM accounts").fetchone()[0]
    rng = random.Random(7)
    latencies = []
    started_at = []
    failures = 0
    ready = stop_file + ".ready"
    while not os.path.exists(stop_file):
        a, b = rng.sample(range(1, accounts + 1), 2)
        amount = rng.randint(1, 100)
        started = time.perf_counter()
        started_at.append(time.time())
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
            con.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
            if has_meta:
                con.execute("UPDATE meta SET transfers = transfers + 1")
            con.execute("COMMIT")
        except sqlite3.Error as err:
            failures += 1
            print(f"write failed: {err}", file=sys.stderr)
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        latencies.append((time.perf_counter() - started) * 1000)
        if len(latencies) == 100:
            open(ready, "w").close()
    with open(stats_file, "w") as out:
        json.dump(
            {
                "writes": len(latencies),
                "failures": failures,
                "latencies_ms": latencies,
                "started_at": started_at,
            },
            out,
        )


if __name__ == "__main__":
    main()
