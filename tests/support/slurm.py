"""A real one-node Slurm cluster on loopback for tests (munged, slurmctld, slurmd).

Daemons run in the foreground (``-D``) as children of the test process so teardown can always
stop them; state, spool and logs live in the test's directory, selected by ``SLURM_CONF``.
If Slurm cannot start, :class:`SlurmUnavailable` says why — tests fail with it, never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MUNGE_PID = Path("/run/munge/munged.pid")


class SlurmUnavailable(RuntimeError):
    """Slurm could not be started on this machine; the message says what failed."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*cmd: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def ensure_munge() -> None:
    """Start munged unless it already answers (it is machine-wide and left running for reuse)."""
    if _run("sh", "-c", "munge -n | unmunge").returncode == 0:
        return
    for tool in ("munged", "munge", "unmunge"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SlurmUnavailable(f"{tool} is not installed (Debian package munge)")
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        _run("mungekey", "--create")
        shutil.chown("/etc/munge/munge.key", "munge", "munge")
    started = _run("su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged")
    if started.returncode != 0:
        raise SlurmUnavailable(f"munged did not start: {started.stderr.strip()}")
    deadline = time.monotonic() + 10
    while _run("sh", "-c", "munge -n | unmunge").returncode != 0:
        if time.monotonic() > deadline:
            raise SlurmUnavailable("munged started but `munge -n | unmunge` keeps failing")
        time.sleep(0.1)


@dataclass
class SlurmCluster:
    """slurmctld + slurmd for one node named after this host, partition ``debug``."""

    root: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for every Slurm client (sbatch, squeue, scancel, Parsl)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        node = _run("slurmd", "-C").stdout.splitlines()
        if not node or not node[0].startswith("NodeName="):
            raise SlurmUnavailable(f"`slurmd -C` printed no node line: {node}")
        host = socket.gethostname().split(".")[0]
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=fxtest",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
                    f"{node[0]} NodeAddr=127.0.0.1 State=UNKNOWN",
                    f"PartitionName=debug Nodes={node[0].split()[0].split('=')[1]} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _spawn(self, *cmd: str) -> None:
        log = open(self.root / "log" / f"{Path(cmd[0]).name}.out", "ab")
        self.processes.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _wait(self, what: str, check, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            for proc in self.processes:
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{proc.args[0]} exited while waiting for {what}: {self.logs()}")
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"timed out waiting for {what}: {self.logs()}")
            time.sleep(0.1)

    def start(self) -> "SlurmCluster":
        for tool in ("slurmctld", "slurmd", "sinfo", "sbatch"):
            if shutil.which(tool) is None:
                raise SlurmUnavailable(f"{tool} is not installed (Debian packages slurmctld slurmd slurm-client)")
        ensure_munge()
        self._write_conf()
        self._spawn("slurmctld", "-D", "-c", "-i")
        self._wait("slurmctld", lambda: "UP" in _run("scontrol", "ping", env=self.env).stdout)
        self._spawn("slurmd", "-D")
        self._wait("the node to be idle", lambda: "idle" in _run("sinfo", "-h", "-o", "%t", env=self.env).stdout)
        return self

    def squeue(self) -> list[str]:
        """Job ids Slurm knows about (pending or running)."""
        out = _run("squeue", "-h", "-o", "%i", env=self.env).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def logs(self) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*")):
            parts.append(f"== {f.name}\n{f.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel all jobs and stop the daemons (munged stays, shared by the machine)."""
        if self.processes:
            _run("scancel", "--full", "--user", "root", env=self.env)
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.processes.clear()
