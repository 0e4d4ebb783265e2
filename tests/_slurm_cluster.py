"""A throw-away single-node Slurm cluster for the real-engine tests (``tests/test_slurm.py``).

:func:`start_cluster` starts, from Debian's packages (``slurmctld``, ``slurmd``, ``slurm-client``, ``munge``):

* a private ``munged`` (run as the ``munge`` user, with a copy of the system key or a fresh one, its
  socket, pid, log and seed files in the cluster folder);
* ``slurmctld`` and ``slurmd`` with ``-f`` a minimal ``slurm.conf``: the short hostname as the one node
  (``CPUs=2`` by default), one partition, no cgroups (``ProctrackType=proctrack/linuxproc``,
  ``TaskPlugin=task/none``), no accounting (``JobAcctGatherType=jobacct_gather/none``),
  ``SelectType=select/cons_tres`` with ``CR_CPU`` (a 1-CPU task leaves the other CPU to a second task),
  ``ReturnToService=2``, free TCP ports, and every state, spool, pid and log path in the cluster folder.

It waits until ``sinfo`` shows the node idle. :meth:`SlurmCluster.stop` ends exactly the daemons it
started (by their pids). Client commands find the cluster through ``SLURM_CONF`` (:attr:`SlurmCluster.env`).
There is no ``sacct`` without accounting storage: jobs are followed with ``squeue`` and
``scontrol show job`` (finished jobs stay visible for ``MinJobAge`` = 600 s).

:func:`start_cluster` raises :class:`SlurmUnavailable` (with the reason) when the binaries are missing,
the process is not root (``slurmd`` must be), or a daemon does not come up; the test skips with it.
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

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel", "munged")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be started here; the message says why."""


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class SlurmCluster:
    """A running single-node cluster (see the module docstring)."""

    root: Path
    conf: Path
    node: str
    partition: str
    cpus: int
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``SLURM_CONF`` and the folder of the Slurm binaries on ``PATH``."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/usr/bin"
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster (text output)."""
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def job_states(self, job_id: str) -> dict[str, str]:
        """``{job id (array tasks as <id>_<index>): state}`` of a job or array, from ``scontrol show job``."""
        r = self.run("scontrol", "-o", "show", "job", str(job_id), check=False)
        states: dict[str, str] = {}
        for line in r.stdout.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if "JobId" not in fields:
                continue
            key = fields["JobId"]
            if fields.get("ArrayTaskId") and "_" not in key:
                key = f"{fields.get('ArrayJobId', key)}_{fields['ArrayTaskId']}"
            states[key] = fields.get("JobState", "?")
        return states

    def wait(self, job_ids: list[str], timeout: float, poll: float = 1.0) -> dict[str, str]:
        """Wait until every task of ``job_ids`` has left PENDING/RUNNING (and the like); return all states.

        A job pending for a dependency that can never be met counts as finished (state ``PENDING``
        with reason ``DependencyNeverSatisfied`` is reported as ``DEPENDENCY_NEVER_SATISFIED``).
        """
        active = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
        deadline = time.monotonic() + timeout
        while True:
            states: dict[str, str] = {}
            for j in job_ids:
                states.update(self.job_states(j))
                r = self.run("squeue", "-h", "-j", str(j), "-o", "%i %r", check=False)
                for line in r.stdout.splitlines():
                    parts = line.split(None, 1)
                    if len(parts) == 2 and "DependencyNeverSatisfied" in parts[1]:
                        states[parts[0]] = "DEPENDENCY_NEVER_SATISFIED"
            if states and not any(s in active for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"Slurm jobs {job_ids} still active after {timeout:.0f} s: {states}")
            time.sleep(poll)

    def stop(self) -> None:
        """End the daemons this cluster started (SIGTERM, then SIGKILL), by their pids."""
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _read_pid(path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            text = path.read_text().strip()
            if text.isdigit():
                return int(text)
        time.sleep(0.1)
    raise SlurmUnavailable(f"{path}: no pid file after {timeout:.0f} s")


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _start_munged(root: Path, bins: dict[str, str]) -> tuple[int, Path]:
    """A private munged as the munge user; returns (pid, socket path)."""
    import pwd

    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError as e:
        raise SlurmUnavailable("no 'munge' user (is the munge package installed?)") from e
    mdir = root / "munge"
    mdir.mkdir(mode=0o700)
    key = mdir / "munge.key"
    system_key = Path("/etc/munge/munge.key")
    if system_key.is_file():
        shutil.copyfile(system_key, key)
    else:
        key.write_bytes(os.urandom(128))
    os.chmod(key, 0o600)
    for p in (mdir, key):
        os.chown(p, munge_user.pw_uid, munge_user.pw_gid)
    sock = mdir / "munge.socket"
    cmd = [bins["munged"], "--force", "--key-file", str(key), "--socket", str(sock), "--pid-file",
           str(mdir / "munged.pid"), "--log-file", str(mdir / "munged.log"), "--seed-file", str(mdir / "munged.seed")]
    runuser = _which("runuser")
    if runuser is None:
        raise SlurmUnavailable("runuser not found (needed to start munged as the munge user)")
    r = subprocess.run([runuser, "-u", "munge", "--", *cmd], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise SlurmUnavailable(f"munged failed to start: {r.stderr.strip() or r.stdout.strip()}")
    return _read_pid(mdir / "munged.pid", 10), sock


def slurm_conf(root: Path, node: str, cpus: int, memory_mb: int, ports: list[int], munge_socket: Path,
               partition: str = "quantif") -> str:
    """The text of the minimal single-node ``slurm.conf``."""
    return "\n".join([
        "ClusterName=quantiftest",
        f"SlurmctldHost={node}",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "SlurmUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2,bf_interval=2",
        "ReturnToService=2",
        "MpiDefault=none",
        "KillWait=5",
        "MinJobAge=600",
        "SlurmdTimeout=60",
        "InactiveLimit=0",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        f"NodeName={node} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def start_cluster(root: Path, cpus: int = 2, timeout: float = 60) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under ``root`` and wait for the node to be idle.

    Raises
    ------
    SlurmUnavailable
        Binaries missing, not root, or a daemon did not come up (the message holds its log's tail).
    """
    bins = {b: _which(b) for b in BINARIES}
    missing = [b for b, p in bins.items() if p is None]
    if missing:
        raise SlurmUnavailable(f"Slurm binaries not found: {', '.join(missing)} "
                               "(apt-get install slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"slurmd must run as root; this test runs as uid {os.geteuid()}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for d in ("state", "spool"):
        (root / d).mkdir(exist_ok=True)
    node = socket.gethostname().split(".")[0]
    with open("/proc/meminfo") as fh:
        total_kb = int(next(line.split()[1] for line in fh if line.startswith("MemTotal")))
    memory_mb = max(256, total_kb // 1024 // 2)
    cluster = SlurmCluster(root=root, conf=root / "slurm.conf", node=node, partition="quantif", cpus=cpus)
    try:
        cluster.pids["munged"], munge_socket = _start_munged(root, bins)
        cluster.conf.write_text(slurm_conf(root, node, cpus, memory_mb, _free_ports(2), munge_socket))
        for daemon, pidfile, log in (("slurmctld", "slurmctld.pid", "slurmctld.log"),
                                     ("slurmd", "slurmd.pid", "slurmd.log")):
            extra = ["-i"] if daemon == "slurmctld" else []  # -i: ignore (absent) saved state
            r = subprocess.run([bins[daemon], "-f", str(cluster.conf), *extra], env=cluster.env,
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise SlurmUnavailable(f"{daemon} failed to start (exit {r.returncode}): {r.stderr.strip()}\n"
                                       f"{_tail(root / log)}")
            cluster.pids[daemon] = _read_pid(root / pidfile, 15)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            r = cluster.run("sinfo", "-h", "-N", "-o", "%t", check=False)
            state = r.stdout.strip() or r.stderr.strip()
            if r.returncode == 0 and state == "idle":
                return cluster
            time.sleep(0.5)
        raise SlurmUnavailable(f"node {node} not idle after {timeout:.0f} s (sinfo: {state!r})\n"
                               f"slurmctld: {_tail(root / 'slurmctld.log')}\nslurmd: {_tail(root / 'slurmd.log')}")
    except BaseException:
        cluster.stop()
        raise
