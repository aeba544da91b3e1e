"""Run untrusted Python (model-written code) in a sandbox, one throwaway directory per run.

Every run gets
  * resource limits, set with setrlimit in the child before it executes anything: CPU seconds, address
    space (memory), number of processes (a fork bomb stops there), file size, open files, no core dumps;
  * its own session and process group, killed as a whole at the wall-clock timeout;
  * when this process is root: an unprivileged user id of its own (never root, which the kernel exempts
    from the process limit), so it can touch nothing that only root may, and its leftovers are swept.
    The uid is leased machine-wide: an exclusive flock on its file in UID_LEASE_DIR, held from before the
    run until its sweep is done, so evaluations running side by side on one machine never share a uid and
    no sweep kills another run's program. The kernel drops a lease when its holder dies; a uid taken over
    from a dead holder is swept before it is used;
  * OS isolation when the machine allows it ("bwrap", bubblewrap): new user, network, PID, IPC and UTS
    namespaces (no network at all, no view of host processes, everything dies with the run), the whole
    file system read-only, a private empty /tmp, and only its own directory writable.

`Sandbox` refuses to run anything when it gets no OS isolation ("none") unless told `unsafe=True`; it
reports the level it got in `Sandbox.isolation`.
"""
from __future__ import annotations

import fcntl
import itertools
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal

OUTPUT_LIMIT = 8192  # characters of stdout / stderr kept per run
SWEEP_WAIT_S = 10.0  # how long the processes a run left behind may take to die
UID_SPAN = 4096  # as root, runs lease uids among this many from sandbox_uid_base
UID_LEASE_DIR = "/run/kiln-sandbox-uids"  # one lock file per uid; every evaluation on the machine shares it


class SandboxUnavailable(RuntimeError):
    """No OS isolation could be had and running without it was not allowed."""


@dataclass
class SandboxConfig:
    isolation: Literal["auto", "bwrap", "none"] = "auto"  # auto: bwrap when it works here, else none
    unsafe: bool = False  # allow isolation "none" (resource limits and a separate user only)
    timeout_s: float = 10.0  # wall clock per run
    cpu_s: int = 10
    memory_mb: int = 1024  # address space
    max_processes: int = 32
    max_file_mb: int = 16
    max_open_files: int = 64
    workers: int = 2  # runs at once
    python: str | None = None  # interpreter for the code; default: the first that works inside the sandbox
    # When this process is root, each run leases its own uid (and gid) from base .. base + UID_SPAN - 1.
    sandbox_uid_base: int = 1_900_000_000

    def __post_init__(self):
        for key in ("timeout_s", "cpu_s", "memory_mb", "max_processes", "max_file_mb", "max_open_files", "workers"):
            if getattr(self, key) <= 0:
                raise ValueError(f"SandboxConfig.{key} must be positive, got {getattr(self, key)!r}")


@dataclass
class ExecResult:
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _user_process_count(uid: int, include_zombies: bool = True) -> int:
    """Processes of `uid` on this machine (RLIMIT_NPROC counts them all, not only the sandbox's)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                if not include_zombies:
                    with open(f"/proc/{entry}/stat", "rb") as handle:
                        if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                            continue
                count += 1
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return count


class Sandbox:
    """Runs Python programs under limits and, where possible, bubblewrap isolation."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self.as_root = os.geteuid() == 0
        # Where this Sandbox starts looking for a free uid: a random place, so processes seldom race for one.
        self._uid_cursor = itertools.count(random.SystemRandom().randrange(UID_SPAN))
        self.isolation, self.python, self.isolation_note = self._choose_isolation()
        if self.isolation == "none" and not self.config.unsafe:
            raise SandboxUnavailable(
                f"no OS isolation for untrusted code here ({self.isolation_note}); refusing to run it. "
                "Install bubblewrap (apt-get install bubblewrap) and allow user namespaces, or pass unsafe=True "
                "(--unsafe) to run it with resource limits only"
            )

    # ---- public

    def run(self, program: str) -> ExecResult:
        """Run `program` (Python source) as program.py in a fresh directory."""
        return self._run(program, self.python, self.isolation)

    def run_many(self, programs: list[str]) -> list[ExecResult]:
        """Run programs `workers` at a time; results in the order given."""
        workers = min(self.config.workers, max(len(programs), 1))
        if workers == 1:
            return [self.run(program) for program in programs]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(self.run, programs))

    # ---- internals

    def _run(self, program: str, python: str, isolation: str) -> ExecResult:
        if not self.as_root:
            return self._run_as(os.getuid(), program, python, isolation)
        with self._leased_uid() as uid:
            return self._run_as(uid, program, python, isolation)

    @contextmanager
    def _leased_uid(self) -> Iterator[int]:
        """A sandbox uid that no other run on this machine holds, swept of any process left by a dead
        holder before the block and of the run's own leftovers after it; released when the block ends."""
        lease, uid = self._take_free_uid()
        try:
            self._sweep(uid)
            yield uid
        finally:
            try:
                self._sweep(uid)
            finally:
                os.close(lease)  # releases the flock

    def _take_free_uid(self) -> tuple[int, int]:
        """(lease file descriptor, uid) of the next uid whose lease nobody holds, now flocked; while every
        uid is held (more runs at once than UID_SPAN), waits for one as long as a run may take."""
        os.makedirs(UID_LEASE_DIR, mode=0o700, exist_ok=True)
        deadline = time.monotonic() + self.config.timeout_s + SWEEP_WAIT_S
        while True:
            for _ in range(UID_SPAN):
                uid = self.config.sandbox_uid_base + next(self._uid_cursor) % UID_SPAN
                lease = os.open(os.path.join(UID_LEASE_DIR, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return lease, uid
                except BlockingIOError:  # another run (of this process or another) holds it
                    os.close(lease)
            if time.monotonic() > deadline:
                raise RuntimeError(f"all {UID_SPAN} sandbox uids from {self.config.sandbox_uid_base} stayed leased "
                                   f"(lock files in {UID_LEASE_DIR})")
            time.sleep(0.05)

    def _run_as(self, uid: int, program: str, python: str, isolation: str) -> ExecResult:
        workdir = tempfile.mkdtemp(prefix="kiln-sandbox-")
        try:
            path = os.path.join(workdir, "program.py")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(program)
            if self.as_root:
                os.chown(workdir, uid, uid)
                os.chown(path, uid, uid)
            os.chmod(workdir, 0o700)
            command = [python, "-I", "-B", "program.py"]
            if isolation == "bwrap":
                command = self._bwrap(workdir) + command
            return self._execute(command, workdir, uid)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    def _bwrap(workdir: str) -> list[str]:
        return [
            shutil.which("bwrap") or "bwrap",
            "--unshare-all", "--die-with-parent", "--new-session",
            "--ro-bind", "/", "/",
            "--dev", "/dev", "--proc", "/proc",
            "--size", str(64 << 20), "--tmpfs", "/tmp",
            "--bind", workdir, workdir, "--chdir", workdir,
            "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", workdir,
        ]

    def _limits(self, uid: int):
        """The preexec function: new session, rlimits, then (as root) drop to the sandbox uid."""
        config = self.config
        nproc = config.max_processes
        if not self.as_root:  # the limit counts every process of this user, not just the sandbox's
            nproc += _user_process_count(uid)
        memory = config.memory_mb << 20
        file_size = config.max_file_mb << 20
        as_root = self.as_root

        def preexec() -> None:
            os.setsid()
            resource.setrlimit(resource.RLIMIT_CPU, (config.cpu_s, config.cpu_s + 1))
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
            resource.setrlimit(resource.RLIMIT_NOFILE, (config.max_open_files, config.max_open_files))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if as_root:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        return preexec

    def _execute(self, command: list[str], workdir: str, uid: int) -> ExecResult:
        start = time.monotonic()
        timed_out = False
        # Output goes to files, which RLIMIT_FSIZE bounds: a print loop cannot fill this process's memory.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                process = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                           preexec_fn=self._limits(uid), env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
            except OSError as error:  # the interpreter (or bwrap) could not be started as the sandbox user
                return ExecResult(127, False, "", f"cannot start {command[0]}: {error}", time.monotonic() - start)
            try:
                process.wait(timeout=self.config.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                self._kill_group(process.pid)
                process.wait()
            self._kill_group(process.pid)  # anything it left in its group (bwrap's PID namespace takes the rest)
            out.seek(0)
            err.seek(0)
            stdout = out.read(OUTPUT_LIMIT).decode("utf-8", "replace")
            stderr = err.read(OUTPUT_LIMIT).decode("utf-8", "replace")
        return ExecResult(None if timed_out else process.returncode, timed_out, stdout, stderr,
                          time.monotonic() - start)

    @staticmethod
    def _kill_group(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _sweep(self, uid: int) -> None:
        """Kill every process left running as the sandbox uid (one that escaped its process group); only the
        holder of the uid's lease calls this, so whatever runs as that uid is its own run's (or a dead one's)."""
        if _user_process_count(uid, include_zombies=False) == 0:  # the usual case: nothing to start `kill` for
            return

        def become() -> None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

        # kill(-1) from that uid reaches exactly the processes that uid owns (including the killer itself).
        # Zombies are left to init (bwrap leaves one per run); the next runs use other uids meanwhile.
        deadline = time.monotonic() + SWEEP_WAIT_S
        while True:
            subprocess.run(["kill", "-KILL", "-1"], preexec_fn=become, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
            if _user_process_count(uid, include_zombies=False) == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sandbox uid {uid} still has processes {SWEEP_WAIT_S}s after its run was killed")
            time.sleep(0.05)

    def _choose_isolation(self) -> tuple[str, str, str]:
        """(isolation, interpreter, a note on why) for this machine and config."""
        candidates = [self.config.python] if self.config.python else \
            [sys.executable, shutil.which("python3"), "/usr/bin/python3"]
        candidates = [c for c in dict.fromkeys(candidates) if c]
        wanted = self.config.isolation
        note = "isolation 'none' was requested"
        if wanted != "none":
            if shutil.which("bwrap") is None:
                note = "bwrap is not installed"
            else:
                python, problem = self._first_working_python(candidates, "bwrap")
                if python is not None:
                    return "bwrap", python, "bwrap: user, network, PID, IPC and UTS namespaces; read-only file system"
                note = f"bwrap does not work here: {problem}"
            if wanted == "bwrap":
                raise SandboxUnavailable(f"isolation 'bwrap' was requested but {note} (apt-get install bubblewrap)")
        python, problem = self._first_working_python(candidates, "none")
        if python is None:
            raise SandboxUnavailable(f"no Python interpreter runs as the sandbox user: {problem}")
        return "none", python, note

    def _first_working_python(self, candidates: list[str], isolation: str) -> tuple[str | None, str | None]:
        """The first interpreter that runs a trivial program under `isolation`, or (None, why not)."""
        problem = None
        for python in candidates:
            result = self._run("print('ok')", python, isolation)
            if result.passed and result.stdout.strip() == "ok":
                return python, None
            problem = f"{python}: exit {result.returncode}, {result.stderr.strip()[-300:] or 'no output'}"
        return None, problem
