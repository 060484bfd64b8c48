"""A single-node Slurm cluster for the tests: munged, slurmctld and slurmd started here as child
processes, in a temporary folder, and stopped by their pids.

Needs root, Linux and Debian's ``slurm-wlm`` and ``munge`` packages (``.ci/run`` installs them
where it runs as root with apt). The cluster has one node (``localhost``) with this machine's
cores and one partition, no cgroups (``proctrack/linuxproc``, ``task/none``) and no accounting
storage, so ``sacct`` fails as on many small clusters. A requeued job may start again after
10 s (``cred_expire``; Slurm's default is 120 s). :func:`start` raises :class:`Unavailable`,
with the reason, where the cluster cannot run or start here; the client commands (``sbatch``,
``squeue``, ...) find it through ``SLURM_CONF``, which :func:`start` sets until :meth:`stop`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
START_S = 60  # the node must be idle within this


class Unavailable(RuntimeError):
    """The cluster cannot run or start here (the message says why)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: Path, munge_socket: Path) -> str:
    """The ``slurm.conf`` of the one-node cluster whose state lives in ``folder``."""
    return f"""\
ClusterName=htnettest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """The started cluster: its folder, ``slurm.conf`` and daemon processes."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.processes: list[subprocess.Popen] = []
        self._saved_conf = os.environ.get("SLURM_CONF")

    def run(self, *command: str) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster; raises if it fails."""
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)

    def version(self) -> str:
        return self.run("sinfo", "--version").stdout.strip()

    def _start(self, *command: str, user: str | None = None) -> None:
        name = Path(command[0]).name
        out = open(self.folder / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        self.processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                               user=user, start_new_session=True))
        out.close()

    def _log_tail(self) -> str:
        tails = []
        for name in ("munged.out", "slurmctld.out", "slurmd.out", "slurmctld.log", "slurmd.log"):
            path = self.folder / name
            if path.exists():
                lines = [line for line in path.read_text(errors="replace").splitlines()
                         if "error" in line.lower() or "fatal" in line.lower()]
                tails += [f"{name}: {line}" for line in lines[-2:]]
        return "; ".join(tails) or "no error in the daemons' logs"

    def wait_idle(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            for p in self.processes:
                if p.poll() is not None:
                    raise Unavailable(f"{Path(p.args[0]).name} exited with status "
                                      f"{p.returncode}: {self._log_tail()}")
            done = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True,
                                  text=True, timeout=30)
            if done.returncode == 0 and done.stdout.strip() == "idle":
                return
            time.sleep(0.2)
        raise Unavailable(f"the node is not idle after {START_S} s: {self._log_tail()}")

    def stop(self) -> None:
        """Cancel this cluster's jobs, stop its daemons by pid (slurmd, slurmctld, munged) and
        remove its folder."""
        if any(p.poll() is None for p in self.processes):
            subprocess.run(["scancel", "--user", pwd.getpwuid(os.getuid()).pw_name],
                           capture_output=True, timeout=60)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and subprocess.run(
                    ["squeue", "--noheader", "--states=RUNNING,COMPLETING"], capture_output=True,
                    text=True, timeout=30).stdout.strip():
                time.sleep(0.5)
        for p in reversed(self.processes):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self._saved_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._saved_conf
        shutil.rmtree(self.folder, ignore_errors=True)


def start() -> Cluster:
    """Start the cluster and wait until its node is idle; :class:`Unavailable` where it cannot.

    munged runs as user ``munge`` with a fresh key; slurmctld and slurmd run as root, in the
    foreground. Everything lives in a new folder under the temporary directory."""
    if sys.platform != "linux":
        raise Unavailable("a test Slurm cluster runs on Linux only")
    if os.geteuid() != 0:
        raise Unavailable("starting slurmd needs root")
    absent = [c for c in DAEMONS + CLIENTS if not shutil.which(c)]
    if absent:
        raise Unavailable(f"{', '.join(absent)} not on PATH: apt-get install slurm-wlm munge")
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError:
        raise Unavailable("no user munge (the munge package creates it)") from None
    folder = Path(tempfile.mkdtemp(prefix="htnet-slurm-"))
    folder.chmod(0o755)  # munged, as user munge, must reach its own folder
    cluster = Cluster(folder)
    try:
        munge = folder / "munge"
        munge.mkdir(mode=0o755)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        for path in (munge, key):
            os.chown(path, munge_user.pw_uid, munge_user.pw_gid)
        socket_path = munge / "munge.socket"
        cluster._start(shutil.which("munged"), "--foreground", f"--key-file={key}",
                       f"--socket={socket_path}", f"--pid-file={munge}/munged.pid",
                       f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed",
                       user="munge")
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for sub in ("state", "spool"):
            (folder / sub).mkdir()
        cluster.conf.write_text(slurm_conf(folder, socket_path))
        os.environ["SLURM_CONF"] = str(cluster.conf)
        cluster._start(shutil.which("slurmctld"), "-D", "-i", "-f", str(cluster.conf))
        cluster._start(shutil.which("slurmd"), "-D", "-N", "localhost", "-f", str(cluster.conf))
        cluster.wait_idle()
    except BaseException:
        cluster.stop()
        raise
    return cluster


if __name__ == "__main__":  # python tests/slurm_cluster.py: a cluster to try, until Ctrl-C
    try:
        started = start()
    except Unavailable as exc:
        sys.exit(f"slurm_cluster: {exc}")
    print(f"{started.version()} running; in another shell: export SLURM_CONF={started.conf}",
          flush=True)
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        pass
    finally:
        started.stop()
