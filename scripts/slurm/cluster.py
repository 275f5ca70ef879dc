#!/usr/bin/env python3
"""A single-node Slurm cluster for the tests: munged, MariaDB, slurmdbd, slurmctld, slurmd.

    python3 scripts/slurm/cluster.py up      # start (idempotent); prints `export SLURM_CONF=...`
    python3 scripts/slurm/cluster.py down    # stop what `up` started (by its pid files)
    python3 scripts/slurm/cluster.py status

Everything it writes lives under one folder (``--dir``, default ``$ARDBENCH_SLURM_DIR`` or
``/tmp/ardbench-slurm``): configs, state, spool, logs, the database and the pid files. Each
daemon is stopped by the pid file it wrote (checked against ``/proc/PID/comm``), never by
process name, and every daemon listens on the loopback address only (MariaDB on a unix socket).
Needs root and Debian's ``slurm-wlm munge slurmdbd mariadb-server`` (Slurm 22.05). Clients
find the cluster through ``SLURM_CONF`` (sbatch, sacct and the jobs themselves). Standard
library only: the pytest fixture imports this file and CI runs it before the tests.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("ARDBENCH_SLURM_DIR", "/tmp/ardbench-slurm"))
PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
BINARIES = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd")
CLUSTER = "ardbench"
# daemon -> the /proc/PID/comm its pid file must name (comm is cut at 15 characters)
COMM = {"munged": "munged", "mariadb": "mariadbd", "slurmdbd": "slurmdbd"}
COMM |= {"slurmctld": "slurmctld", "slurmd": "slurmd"}
STOP_ORDER = ("slurmd", "slurmctld", "slurmdbd", "mariadb", "munged")


class ClusterError(RuntimeError):
    """The cluster cannot be brought up here (the message says why)."""


def missing() -> str | None:
    """Why a cluster cannot run here, or None."""
    if os.geteuid() != 0:
        return "the test cluster needs root (it runs munged and MariaDB as their own users)"
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install {' '.join(PACKAGES)})"
    return None


class Cluster:
    """The cluster whose files live under ``root``."""

    def __init__(self, root: str | Path = DEFAULT_DIR) -> None:
        self.root = Path(root).resolve()
        self.etc = self.root / "etc"
        self.conf = self.etc / "slurm.conf"
        self.munge = self.root / "munge"
        # Slurm's client commands look for munged at its default socket only
        self.munge_socket = Path("/run/munge/munge.socket.2")
        self.mysql = self.root / "mysql"
        self.db_socket = self.mysql / "mysqld.sock"
        self.log = self.root / "log"
        self.run = self.root / "run"
        self.host = socket.gethostname().split(".")[0]

    # ---------------------------------------------------------------------------- helpers

    @property
    def env(self) -> dict[str, str]:
        """The environment a client (sbatch, sacct, a job) needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "MYSQL_UNIX_PORT": str(self.db_socket)}

    def pid_file(self, daemon: str) -> Path:
        return (
            (self.mysql / "data" / "mariadb.pid")
            if daemon == "mariadb"
            else (self.run / f"{daemon}.pid")
        )

    def pid(self, daemon: str) -> int | None:
        """The daemon's pid when its pid file names a live process of that name."""
        try:
            pid = int(self.pid_file(daemon).read_text().split()[0])
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return None
        return pid if comm == COMM[daemon] and state != "Z" else None

    def _call(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        proc = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    def _wait(self, what: str, ready, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except (OSError, subprocess.SubprocessError, ClusterError):
                pass
            time.sleep(0.2)
        raise ClusterError(f"{what} did not come up in {timeout:.0f}s (logs in {self.log})")

    def _owned_dir(self, path: Path, user: str, mode: int = 0o755) -> None:
        path.mkdir(parents=True, exist_ok=True)
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        path.chmod(mode)

    # --------------------------------------------------------------------------------- up

    def up(self) -> None:
        """Start every daemon not already running (idempotent), then wait for an idle node."""
        why = missing()
        if why:
            raise ClusterError(why)
        for d in (self.root, self.etc, self.log, self.run, self.root / "state"):
            self._owned_dir(d, "root")
        (self.root / "spool").mkdir(exist_ok=True)
        self._write_configs()
        self._start_munged()
        self._start_mariadb()
        self._start_slurm("slurmdbd", lambda: self._call("sacctmgr", "-n", "show", "cluster") or 1)
        self._start_slurm("slurmctld", lambda: self._call("scontrol", "ping").count("UP") > 0)
        self._start_slurm("slurmd", self._node_ready)

    def _node_ready(self) -> bool:
        states = self._call("sinfo", "-h", "-N", "-o", "%T").split()
        return bool(states) and all(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states)

    def _write_configs(self) -> None:
        node = self._call("slurmd", "-C").splitlines()[0]  # NodeName=... CPUs=... RealMemory=...
        fields = dict(f.split("=", 1) for f in node.split() if "=" in f)
        fields.pop("UpTime", None)
        # leave the OS some memory: jobs may ask for at most this much
        fields["RealMemory"] = str(max(1024, int(fields.get("RealMemory", "2048")) - 1024))
        node_line = " ".join(f"{k}={v}" for k, v in fields.items())
        r = self.root
        slurm = f"""# written by scripts/slurm/cluster.py: a single-node test cluster
ClusterName={CLUSTER}
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
{node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        dbd = f"""AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile={r}/run/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
"""
        self.conf.write_text(slurm)
        dbd_conf = self.etc / "slurmdbd.conf"
        dbd_conf.write_text(dbd)
        dbd_conf.chmod(0o600)  # slurmdbd refuses a readable one

    def _start_munged(self) -> None:
        if self.pid("munged"):
            return
        self._owned_dir(self.munge, "munge", 0o700)
        self._owned_dir(self.munge_socket.parent, "munge", 0o755)  # no systemd to make it
        key = Path("/etc/munge/munge.key")
        if not key.is_file():  # Debian's install writes one; make a private one otherwise
            key = self.munge / "munge.key"
            if not key.is_file():
                key.write_bytes(os.urandom(128))
                pw = pwd.getpwnam("munge")
                os.chown(key, pw.pw_uid, pw.pw_gid)
                key.chmod(0o400)
        for stale in (self.munge_socket, Path(f"{self.munge_socket}.lock")):
            stale.unlink(missing_ok=True)  # left by a killed munged
        m = self.munge
        self._call(
            "runuser", "-u", "munge", "--", "munged", f"--socket={self.munge_socket}",
            f"--key-file={key}", f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
            f"--seed-file={m}/munged.seed",
        )  # fmt: skip
        self.pid_file("munged").write_text((m / "munged.pid").read_text())
        self._wait("munged", lambda: self.munge_socket.exists())

    def _start_mariadb(self) -> None:
        if self.pid("mariadb"):
            return
        self._owned_dir(self.mysql, "mysql")
        data = self.mysql / "data"
        if not (data / "mysql").is_dir():
            self._owned_dir(data, "mysql", 0o700)
            self._call(
                "mariadb-install-db", "--user=mysql", f"--datadir={data}", "--skip-test-db",
                "--auth-root-authentication-method=socket", timeout=120,
            )  # fmt: skip
        self.db_socket.unlink(missing_ok=True)
        with open(self.log / "mariadb.log", "ab") as log:
            subprocess.Popen(
                ["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}",
                 f"--socket={self.db_socket}", f"--pid-file={self.pid_file('mariadb')}",
                 "--skip-networking", "--innodb-buffer-pool-size=64M"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        self._wait("MariaDB", lambda: self.pid("mariadb") and self.db_socket.exists(), 90)

    def _start_slurm(self, daemon: str, ready) -> None:  # type: ignore[no-untyped-def]
        if not self.pid(daemon):
            args = [daemon]
            if daemon != "slurmdbd":  # slurmdbd reads slurmdbd.conf beside SLURM_CONF
                args += ["-f", str(self.conf)]
            self._call(*args)  # each forks into the background and writes its pid file
        self._wait(daemon, ready, 60)

    # ------------------------------------------------------------------------------- down

    def down(self) -> None:
        """Cancel every job, wait for the node to empty, then stop each daemon by its pid
        file. Safe to call when nothing (or only part) is running."""
        if self.pid("slurmctld"):
            self._call("scancel", "--full", "--user=root", check=False)
            self._call("scancel", "--user=root", "--signal=KILL", check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self._call("squeue", "-h", check=False).strip():
                time.sleep(0.5)
        if self.pid("slurmd"):  # job processes slurmd still tracks
            for line in self._call("scontrol", "listpids", check=False).splitlines()[1:]:
                parts = line.split()
                if parts and parts[0].isdigit():
                    _signal(int(parts[0]), signal.SIGKILL)
        for daemon in STOP_ORDER:
            pid = self.pid(daemon)
            if pid is None:
                continue
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.pid(daemon) == pid:
                time.sleep(0.1)
            if self.pid(daemon) == pid:
                _signal(pid, signal.SIGKILL)
            self.pid_file(daemon).unlink(missing_ok=True)

    def status(self) -> dict[str, int | None]:
        return {d: self.pid(d) for d in reversed(STOP_ORDER)}


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--dir", default=str(DEFAULT_DIR), help=f"the cluster's folder ({DEFAULT_DIR})")
    args = p.parse_args(argv)
    cluster = Cluster(args.dir)
    t0 = time.perf_counter()
    try:
        if args.action == "up":
            cluster.up()
            print(f"slurm cluster up in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            print(f"export SLURM_CONF={cluster.conf}")
        elif args.action == "down":
            cluster.down()
            print(f"slurm cluster down in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        else:
            for daemon, pid in cluster.status().items():
                print(f"{daemon:10} {pid or 'stopped'}")
    except (ClusterError, subprocess.SubprocessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
