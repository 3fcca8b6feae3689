"""The local journal between the web workers and the database (gatekeeper/spool.py)."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gatekeeper import spool
from gatekeeper.cli import main
from gatekeeper.spool import Spool, SpoolError, SpoolRecord, drain, pending

ROOT = Path(__file__).resolve().parent.parent


class Collect:
    """A handler that keeps what it was handed, and can be told to fail."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[SpoolRecord]] = []
        self.fail_on = fail_on

    def __call__(self, records: list[SpoolRecord]) -> None:
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            self.fail_on = None
            raise RuntimeError("database down")
        self.batches.append(records)

    @property
    def data(self) -> list[bytes]:
        return [r.data for batch in self.batches for r in batch]


def files(root: Path, stream: str = "s") -> list[str]:
    return sorted(p.name for p in (root / stream).glob("*.log"))


def test_records_are_handed_once_in_append_order_with_stable_keys(tmp_path: Path) -> None:
    writer = Spool(tmp_path, "s")
    writer.append(b'{"n":1}')
    writer.append_many([b'{"n":2}', b'{"n":3}'])
    assert pending(tmp_path, "s") == 24
    got = Collect()
    assert drain(tmp_path, "s", got) == 3
    assert got.data == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    name = files(tmp_path)[0]
    assert [r.key for r in got.batches[0]] == [f"{name}:0", f"{name}:8", f"{name}:16"]
    assert pending(tmp_path, "s") == 0
    assert drain(tmp_path, "s", got) == 0
    writer.append(b"four")
    assert drain(tmp_path, "s", got) == 1
    assert got.batches[-1] == [SpoolRecord(f"{name}:24", b"four")]


def test_a_line_not_yet_complete_waits_for_its_newline(tmp_path: Path) -> None:
    Spool(tmp_path, "s").append(b"whole")
    path = tmp_path / "s" / files(tmp_path)[0]
    with path.open("ab") as fh:
        fh.write(b"half")
    got = Collect()
    assert drain(tmp_path, "s", got) == 1
    with path.open("ab") as fh:
        fh.write(b"-done\n")
    assert drain(tmp_path, "s", got) == 1
    assert got.data == [b"whole", b"half-done"]


def test_a_failed_batch_is_handed_again_and_earlier_batches_are_not(tmp_path: Path) -> None:
    Spool(tmp_path, "s").append_many([b"a", b"b", b"c", b"d", b"e"])
    failing = Collect(fail_on=1)
    with pytest.raises(RuntimeError):
        drain(tmp_path, "s", failing, batch=2)
    assert failing.data == [b"a", b"b"]
    again = Collect()
    assert drain(tmp_path, "s", again, batch=2) == 3
    assert again.data == [b"c", b"d", b"e"]
    assert again.batches[0][0].key.endswith(":4")  # the same key as the first time it was handed


def test_a_second_drainer_of_the_same_stream_gets_nothing(tmp_path: Path) -> None:
    Spool(tmp_path, "s").append(b"x")
    fd = os.open(tmp_path / "s" / spool.LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert drain(tmp_path, "s", Collect()) == 0
    finally:
        os.close(fd)
    assert drain(tmp_path, "s", Collect()) == 1


def test_a_record_with_a_newline_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    writer = Spool(tmp_path, "s")
    with pytest.raises(SpoolError, match="newline"):
        writer.append_many([b"fine", b"bro\nken"])
    assert pending(tmp_path, "s") == 0


def test_a_full_file_is_rotated_and_deleted_once_drained(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(spool, "ROTATE_BYTES", 10)
    writer = Spool(tmp_path, "s")
    writer.append(b"0123456789")  # 11 bytes: the next record opens a new file
    writer.append(b"next")
    assert len(files(tmp_path)) == 2
    got = Collect()
    assert drain(tmp_path, "s", got) == 2
    assert got.data == [b"0123456789", b"next"]
    assert files(tmp_path) == [f"{spool.HOST}-{os.getpid()}-000001.log"]  # the current file stays


def _append_in_child(root: Path, records: list[bytes], fragment: bytes = b"") -> None:
    code = (
        "import sys; from pathlib import Path; from gatekeeper.spool import Spool\n"
        "s = Spool(Path(sys.argv[1]), 's'); s.append_many([r.encode() for r in sys.argv[3:]])\n"
        "fd = s._descriptor(); import os; os.write(fd, sys.argv[2].encode())\n"
    )
    args = [sys.executable, "-c", code, str(root), fragment.decode(), *(r.decode() for r in records)]
    subprocess.run(args, check=True, cwd=ROOT)


def test_a_dead_writers_file_is_drained_then_deleted(tmp_path: Path) -> None:
    _append_in_child(tmp_path, [b"one", b"two"])
    got = Collect()
    assert drain(tmp_path, "s", got) == 2
    assert got.data == [b"one", b"two"]
    assert files(tmp_path) == []
    assert not (tmp_path / "s" / spool.OFFSETS).read_text().count(".log")


def test_a_fragment_left_by_a_dead_writer_is_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _append_in_child(tmp_path, [b"kept"], fragment=b'{"cut sho')
    got = Collect()
    with caplog.at_level(logging.ERROR, logger="gatekeeper.spool"):
        assert drain(tmp_path, "s", got) == 1
    assert got.data == [b"kept"]
    assert "9 bytes cut short" in caplog.text
    assert files(tmp_path) == []
    assert pending(tmp_path, "s") == 0


def test_a_forked_child_writes_its_own_file(tmp_path: Path) -> None:
    writer = Spool(tmp_path, "s")
    writer.append(b"parent")
    pid = os.fork()
    if pid == 0:  # the child: same object, must not append to the parent's file
        try:
            writer.append(b"child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    writer.append(b"parent again")
    assert len(files(tmp_path)) == 2
    got = Collect()
    drain(tmp_path, "s", got)
    assert sorted(got.data) == [b"child", b"parent", b"parent again"]


def test_fsync_appends_are_drained_like_the_others(tmp_path: Path) -> None:
    Spool(tmp_path, "s", fsync=True).append(b"synced")
    got = Collect()
    assert drain(tmp_path, "s", got) == 1
    assert got.data == [b"synced"]


# --- the registry and the command --------------------------------------------------------

built: list[Any] = []
handed: list[bytes] = []


def recording_handler(settings: Any, database: Any) -> Any:
    """A stream handler factory, registered by the tests below."""
    built.append(settings.spool_dir)

    def handle(records: list[SpoolRecord]) -> None:
        handed.extend(r.data for r in records)

    return handle


def empty_queue(settings: Any, database: Any) -> int:
    """The database's queue (``spool.QUEUE``) of a register these tests never create."""
    return 0


@pytest.fixture
def test_stream(monkeypatch: Any) -> None:
    monkeypatch.setattr(spool, "STREAMS", {"s": "test_spool:recording_handler"})
    monkeypatch.setattr(spool, "QUEUE", "test_spool:empty_queue")
    built.clear()
    handed.clear()


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "GATEKEEPER_ENV": "dev",
        "GATEKEEPER_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}",
        "GATEKEEPER_SPOOL_DIR": str(tmp_path / "spool"),
    }


@pytest.mark.usefixtures("test_stream")
def test_drain_once_applies_every_registered_stream(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["drain", "--once", "--nice", "0"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert "drained nothing" in result.output
    assert built == []  # nothing journaled: the handler is not even built
    Spool(tmp_path / "spool", "s").append_many([b"a", b"b"])
    result = runner.invoke(main, ["drain", "--once", "--nice", "0"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert "drained 2 s" in result.output
    assert handed == [b"a", b"b"]
    assert built == [str(tmp_path / "spool")]


def test_the_drainer_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, **_env(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.cli", "drain", "--interval", "0.05"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.5)  # let it start and make a few passes
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()


def test_threads_of_one_process_share_its_file_without_mixing_lines(tmp_path: Path) -> None:
    import threading

    writer = Spool(tmp_path, "s")
    payloads = [[f'{{"t":{t},"n":{n},"pad":"{"x" * 300}"}}'.encode() for n in range(300)] for t in range(4)]

    def write(records: list[bytes]) -> None:
        for record in records:
            writer.append(record)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = Collect()
    drain(tmp_path, "s", got)
    assert len(files(tmp_path)) == 1
    assert sorted(got.data) == sorted(r for p in payloads for r in p)
