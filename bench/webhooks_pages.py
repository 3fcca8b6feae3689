"""Which tables and indexes a batched webhook request writes: WAL pages per 500-event batch.

    .venv/bin/python bench/webhooks_pages.py --batches 40

Not a target figure: a guide to where SQLite's write turn, its COMMIT and the WAL checkpoint
spend their work. Same register and signed SendGrid bodies as ``bench/webhooks_phases.py``,
served in-process one after another with the connection's own checkpoints off, so every page
a batch dirtied stays in the WAL as one frame per commit. The frames written after a warm-up
are read back from the WAL file and each page number is named by SQLite's ``dbstat`` table (a
btree: a table or an index). A page written by several commits counts once per commit, as the
COMMIT and the checkpoint pay for it. Prints frames per batch, then per btree, most first; the
last line is the JSON of the same figures.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import struct
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
# As in bench/webhooks.py: keep bench/ off the path, or bench/webhooks.py shadows the adapters.
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from bench.webhooks import seed_register, sendgrid_batches, service_env  # noqa: E402
from bench.webhooks_phases import _inbound  # noqa: E402
from gatekeeper import webhook_service  # noqa: E402
from gatekeeper.app import create_app  # noqa: E402
from gatekeeper.config import load_settings  # noqa: E402
from gatekeeper.webhook_views import SERVICE  # noqa: E402

WAL_HEADER, FRAME_HEADER = 32, 24
WARM_UP = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=40, help="500-event SendGrid batches")
    args = parser.parse_args()
    webhook_service.WORKER_CHECKPOINT_ROWS = 10**12  # every frame stays in the WAL
    with tempfile.TemporaryDirectory(prefix="gk-bench-pages-") as tmp:
        workdir = Path(tmp)
        key = ec.generate_private_key(ec.SECP256R1())
        env = service_env(workdir, key)
        database = workdir / "gatekeeper.db"
        register = seed_register(env["GATEKEEPER_DATABASE_URL"], args.contacts, workdir, env)
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        service = create_app(load_settings(environ=env)).extensions[SERVICE]
        bodies = sendgrid_batches(register, args.batches + WARM_UP, key)
        requests = [_inbound("sendgrid", body, headers) for body, headers in bodies]
        for request in requests[:WARM_UP]:
            service.receive("sendgrid", request)
        wal = Path(f"{database}-wal")
        start = wal.stat().st_size
        for request in requests[WARM_UP:]:
            status, answer = service.receive("sendgrid", request)
            if status != 200:
                raise RuntimeError(f"batch refused: {status} {answer}")
        written = _pages(wal.read_bytes(), start)
        with sqlite3.connect(database) as conn:
            owner = dict(conn.execute("SELECT pageno, name FROM dbstat"))
    by_btree: Counter[str] = Counter()
    for page, frames in written.items():
        by_btree[owner.get(page, "(freed)")] += frames
    total = sum(by_btree.values()) / args.batches
    print(f"WAL frames per 500-event batch: {total:.0f} ({total * 4:.0f} KiB of 4 KiB pages)")
    figures = {"frames_per_batch": round(total, 1)}
    for name, frames in by_btree.most_common():
        print(f"  {frames / args.batches:7.1f}  {name}")
        figures[name] = round(frames / args.batches, 1)
    print(json.dumps(figures))


def _pages(data: bytes, start: int) -> Counter[int]:
    """Frames per page number in the WAL from byte ``start`` (a frame boundary) to its end."""
    page_size = struct.unpack(">I", data[8:12])[0]
    frames: Counter[int] = Counter()
    at = max(start, WAL_HEADER)
    while at + FRAME_HEADER + page_size <= len(data):
        frames[struct.unpack(">I", data[at : at + 4])[0]] += 1
        at += FRAME_HEADER + page_size
    return frames


if __name__ == "__main__":
    main()
