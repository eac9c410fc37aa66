"""PostgreSQL over TLS: a cluster of the test's own with ssl=on and a CA of its own.

`sslmode=verify-full` in SOPHIA_POSTGRES_DSN works end to end (the command line creates the
service's tables through it), and a wrong CA is refused with a clear error.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from sophia_tasks.dev.stack import free_port, port_open, wait_for
from tests.integration.conftest import Harness
from tests.integration.tls import TlsFiles, make_tls

BIN = Path("/usr/lib/postgresql")
SOPHIA = str(Path(sys.executable).parent / "sophia-tasks")


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(BIN.glob(f"*/bin/{name}"))
    if not versions:
        pytest.fail(f"{name} not found: PostgreSQL's server binaries are needed for this test")
    return str(versions[-1])


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[tuple[int, TlsFiles]]:
    # Not under pytest's tmp dir: its parents are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="sophia-pg-tls-"))
    root.chmod(0o755)
    tls = make_tls(root / "tls", "pg")
    data = root / "data"
    data.mkdir()
    for path in (root, data, tls.cert, tls.key):  # the server writes its socket and log here
        shutil.chown(path, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_postgres, _pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120)
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\n")  # TLS or nothing
    port = free_port()
    options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={tls.cert} "
               f"-c ssl_key_file={tls.key}")
    started = subprocess.run([*as_postgres, _pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l",
                              str(root / "pg.log"), "-w", "start"], capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        log = (root / "pg.log").read_text(errors="replace") if (root / "pg.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"the TLS PostgreSQL did not start: {started.stderr}\n{log[-2000:]}")
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 30, "the TLS PostgreSQL")
        yield port, tls
    finally:
        subprocess.run([*as_postgres, _pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def run(harness: Harness, dsn: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SOPHIA, *argv], env=dict(harness.env, SOPHIA_POSTGRES_DSN=dsn), capture_output=True,
                          text=True, timeout=120)


def test_verify_full_works_and_a_wrong_ca_is_refused(harness: Harness, tls_postgres: tuple[int, TlsFiles],
                                                      tmp_path: Path) -> None:
    port, tls = tls_postgres
    dsn = (f"postgresql://postgres@127.0.0.1:{port}/sophia_tls?sslmode=verify-full&sslrootcert={tls.ca}")
    migrated = run(harness, dsn, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    checked = run(harness, dsn, "check", "--only", "postgres", "--json")
    assert checked.returncode == 0 and '"ok"' in checked.stdout, checked.stdout + checked.stderr
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cur.fetchone() == (True,)
            cur.execute("SELECT count(*) FROM pg_tables WHERE tablename IN ('sophia_dead_letters', "
                        "'gong_calls_enriched')")
            assert cur.fetchone() == (2,)
    finally:
        conn.close()

    other = make_tls(tmp_path / "other", "other")  # a CA that did not sign the server's certificate
    wrong = dsn.replace(str(tls.ca), str(other.ca))
    refused = run(harness, wrong, "check", "--only", "postgres")
    assert refused.returncode == 1
    assert "certificate verify failed" in refused.stderr, refused.stderr
    plain = run(harness, f"postgresql://postgres@127.0.0.1:{port}/sophia_tls?sslmode=disable", "check", "--only",
                "postgres")
    assert plain.returncode == 1 and "no encryption" in plain.stderr, plain.stderr
