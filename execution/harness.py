"""The child side of the sandbox: ``python -I -B harness.py job.json``.

Stdlib only and Python 3.8 compatible: the interpreter that runs it may be the
system's, not the one itas is installed in (as root, the run's user ``nobody``
cannot always execute the caller's interpreter). ``itas.execution.sandbox``
writes the job, starts this file and reads the results; nothing here is
imported by itas itself, except the pure ``seccomp_program`` by the tests.

Order of work, and why it is in this order:

1. Read the job; the results go to an inherited file descriptor
   (``results_fd``), opened by the parent, so nothing inside needs write access
   to any host file.
2. ``die_with_parent``: a run must not outlive the agent that started it.
3. Tier ``unshare`` only: a new user namespace (the same uid inside, so
   nothing gets privileges over host files), mount, PID, network, IPC and UTS
   namespaces, every mount made private so nothing propagates to the host.
   (Tier ``bwrap`` has bubblewrap do all of this and of step 5 before the
   harness starts; tier ``unconfined`` skips it.)
4. Fork. The parent (the forwarder) only waits for the child and reports how
   it ended (signal, exit code); the child runs the candidate. In the
   ``unshare`` tier the child is PID 1 of the new PID namespace: when it ends
   the kernel kills every process it left behind, before the forwarder's
   ``waitpid`` returns.
5. Tier ``unshare`` only: the child builds the filesystem the candidate sees
   (the ``plan``: read-only binds of system and interpreter directories, a
   fresh ``/proc`` and ``/dev``, size-capped tmpfs for ``/tmp`` and
   ``/dev/shm``), pivots into it, detaches the host's tree and drops every
   capability it held in its own user namespace.
6. Resource limits, then a seccomp filter (``seccomp_program``): no
   ``socket()`` of any family, no io_uring (which could open sockets past the
   filter), no new namespaces, mounts, ptrace, other processes' memory, kernel
   keyrings, bpf or perf events. Last, because the harness needs some of these
   for its own setup.
7. Run the candidate and the tests in this process, one record per line.

What can go wrong: a kernel without unprivileged user namespaces (or a
container whose seccomp profile forbids them) fails step 3; the harness then
writes a ``setup`` record naming the failed call and exits with
``SETUP_FAILED``, and the parent reports the tier as unavailable.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

SETUP_FAILED = 111

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
# SECBIT_NOROOT, its lock, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE and its lock:
# root inside the namespace (if it is root) gains nothing by exec.
SECUREBITS_LOCKED_DOWN = 0x01 | 0x02 | 0x20 | 0x40 | 0x80
CAPABILITY_VERSION_3 = 0x20080522

# Device nodes the candidate gets in its own /dev (bound from the host's).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

# seccomp: classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}.
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JSET_K = 0x45
BPF_RET_K = 0x06
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
EPERM, ENOSYS = 1, 38
X32_SYSCALL_BIT = 0x40000000

# Per architecture: audit arch, then the syscall numbers by name.
_COMMON_SYSCALLS = {
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442,
}
SYSCALLS = {
    "x86_64": (0xC000003E, {
        **_COMMON_SYSCALLS,
        "socket": 41, "clone": 56, "ptrace": 101, "pivot_root": 155, "mount": 165,
        "umount2": 166, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
        "perf_event_open": 298, "setns": 308, "process_vm_readv": 310,
        "process_vm_writev": 311, "kcmp": 312, "bpf": 321, "userfaultfd": 323,
    }),
    "aarch64": (0xC00000B7, {
        **_COMMON_SYSCALLS,
        "umount2": 39, "mount": 40, "pivot_root": 41, "unshare": 97, "ptrace": 117,
        "socket": 198, "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220,
        "perf_event_open": 241, "setns": 268, "process_vm_readv": 270,
        "process_vm_writev": 271, "kcmp": 272, "bpf": 280, "userfaultfd": 282,
    }),
}
# clone3 answers ENOSYS, so libc falls back to clone, whose flags the filter can read.
DENIED_WITH_ENOSYS = ("clone3",)
DENIED = (
    "socket", "io_uring_setup", "io_uring_enter", "io_uring_register", "unshare", "setns",
    "mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "ptrace", "process_vm_readv", "process_vm_writev",
    "kcmp", "pidfd_getfd", "add_key", "request_key", "keyctl", "bpf", "perf_event_open",
    "userfaultfd",
)


def seccomp_program(machine: str) -> list[tuple[int, int, int, int]] | None:
    """The filter as (code, jt, jf, k) instructions, or None for an unknown architecture.

    A foreign architecture's syscall (i386 ``int 0x80`` on x86_64) kills the
    process: its numbers would bypass the table. x32 numbers answer ENOSYS.
    ``clone`` is allowed unless it asks for a new user namespace (fork, vfork
    and threads use it); ``socketpair`` stays allowed, since its two connected
    ends reach nothing outside the process (asyncio needs one).
    """
    if machine not in SYSCALLS:
        return None
    arch, numbers = SYSCALLS[machine]
    program = [
        (BPF_LD_W_ABS, 0, 0, 4),  # arch
        (BPF_JEQ_K, 1, 0, arch),
        (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (BPF_LD_W_ABS, 0, 0, 0),  # syscall number
    ]
    if machine == "x86_64":
        program += [(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT), (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | ENOSYS)]
    for name in DENIED_WITH_ENOSYS:
        program += [(BPF_JEQ_K, 0, 1, numbers[name]), (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | ENOSYS)]
    for name in DENIED:
        program += [(BPF_JEQ_K, 0, 1, numbers[name]), (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM)]
    program += [
        (BPF_JEQ_K, 0, 3, numbers["clone"]),
        (BPF_LD_W_ABS, 0, 0, 16),  # low half of args[0], the flags (little-endian)
        (BPF_JSET_K, 0, 1, CLONE_NEWUSER),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    return program


class SetupError(Exception):
    """A namespace, mount or privilege call failed; names the call and the errno."""


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SetupError(what + ": " + os.strerror(errno))


def prctl(option: int, arg: int = 0) -> int:
    return int(libc().prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                            ctypes.c_ulong(0)))


def install_seccomp() -> bool:
    program = seccomp_program(os.uname().machine)
    if program is None:
        return False
    raw = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    fprog = _SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    if prctl(PR_SET_NO_NEW_PRIVS, 1) != 0:
        return False
    result = libc().prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER),
                          ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return int(result) == 0


def die_with_parent(parent_pid: int | None) -> None:
    """SIGKILL when the parent dies; if it died already, the kernel would not tell us."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(SETUP_FAILED)


def enter_namespaces() -> None:
    """New user (same ids inside), mount, PID (for our next child), net, IPC, UTS."""
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
    check(libc().unshare(flags | CLONE_NEWUTS), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open("/proc/self/" + name, "w") as f:
            f.write(text)
    mount(None, "/", None, MS_REC | MS_PRIVATE, "make the mount tree private")


def mount(source: str | None, target: str, fstype: str | None, flags: int, what: str,
          data: str | None = None) -> None:
    def raw(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    check(libc().mount(raw(source), raw(target), raw(fstype), ctypes.c_ulong(flags), raw(data)),
          what + " (" + target + ")")


def make_read_only(target: str) -> None:
    """Read-only, nosuid and nodev for a whole bound tree (``mount_setattr``, Linux 5.12):
    flags can only be added to mounts inherited from the host, and that is all this does."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    number = _COMMON_SYSCALLS["mount_setattr"]
    check(libc().syscall(number, AT_FDCWD, os.fsencode(target), AT_RECURSIVE, ctypes.byref(attr),
                         ctypes.sizeof(attr)), "mount_setattr (" + target + ")")


def build_root(plan: list[list[object]], sysroot: str) -> None:
    """Carry out the plan under ``sysroot`` (a fresh tmpfs), then make it ``/``."""
    mount("tmpfs", sysroot, "tmpfs", MS_NOSUID | MS_NODEV, "root tmpfs", "size=1m,mode=0755")
    for op in plan:
        kind, target = str(op[0]), sysroot + str(op[-1])
        if kind == "symlink":
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(str(op[1]), target)
        elif kind == "dir":
            os.makedirs(target, exist_ok=True)
        elif kind == "ro-bind":
            source = str(op[1])
            if os.path.isdir(source):
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                open(target, "a").close()
            mount(source, target, None, MS_BIND | MS_REC, "bind")
            make_read_only(target)
        elif kind == "tmpfs":
            os.makedirs(target, exist_ok=True)
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "tmpfs",
                  f"size={int(str(op[1]))},mode=1777")
        elif kind == "proc":
            os.makedirs(target, exist_ok=True)
            mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "proc")
        elif kind == "dev":
            make_dev(target)
        else:
            raise SetupError("unknown plan step " + kind)
    os.chdir(sysroot)
    pivot = SYSCALLS[os.uname().machine][1]["pivot_root"]
    check(libc().syscall(pivot, b".", b"."), "pivot_root")
    check(libc().umount2(b".", MNT_DETACH), "detach the host's tree")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
          "read-only root")


def make_dev(target: str) -> None:
    os.makedirs(target, exist_ok=True)
    mount("tmpfs", target, "tmpfs", MS_NOSUID, "dev tmpfs", "size=64k,mode=0755")
    for name in DEVICES:
        node = target + "/" + name
        open(node, "a").close()
        mount("/dev/" + name, node, None, MS_BIND, "bind device")
    for name, link in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                       ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(link, target + "/" + name)


def drop_capabilities() -> None:
    """Give up what the new user namespace granted: the candidate keeps none of it."""
    check(prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED_DOWN), "securebits")
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        check(prctl(PR_CAPBSET_DROP, cap), f"drop capability {cap}")
    libc().prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), ctypes.c_ulong(0),
                 ctypes.c_ulong(0), ctypes.c_ulong(0))
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    check(libc().capset(ctypes.byref(header), ctypes.byref(data)), "capset")
    check(prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")


def describe(exc: BaseException, chars: int) -> str:
    text = str(exc)
    name = type(exc).__name__
    return (name + ": " + text if text else name)[:chars]


def limit(applied: list[str], which: int, value: int, name: str, hard: int | None = None) -> None:
    try:
        resource.setrlimit(which, (value, value if hard is None else hard))
        applied.append(name)
    except (ValueError, OSError):
        pass


def processes_of(uid: int) -> int:
    """How many processes of ``uid`` this /proc shows: RLIMIT_NPROC counts them all
    (in the namespaced tiers, only the run's own), so the allowance comes on top."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                count += os.stat("/proc/" + name).st_uid == uid
            except OSError:
                pass
    return count


def forward(out: TextIO, pid: int) -> None:
    """The forwarder: wait for the runner, report how it ended, exit the same way."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + sig
    write(out, {"kind": "exit", "signal": sig, "code": code})
    os._exit(code)


def write(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def run_candidate(job: dict[str, Any], emit: Callable[..., None]) -> None:
    namespace: dict[str, Any] = {"__name__": "__candidate__"}
    chars = job["error_chars"]
    try:
        exec(compile(job["code"], "<candidate>", "exec"), namespace)
    except BaseException as exc:
        emit(kind="load", error=describe(exc, chars))
        return
    for index, source in enumerate(job["tests"]):
        started = time.monotonic()
        try:
            exec(compile(source, "<test " + str(index) + ">", "exec"), namespace)
            if job["check"] is not None:
                if job["check"] not in namespace:
                    raise NameError("entry point " + repr(job["check"]) + " is not defined")
                namespace["check"](namespace[job["check"]])
            passed, error = True, None
        except BaseException as exc:
            passed, error = False, describe(exc, chars)
        emit(kind="test", index=index, passed=passed, error=error,
             duration_s=round(time.monotonic() - started, 6))


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    out = os.fdopen(job["results_fd"], "a", encoding="utf-8")
    applied = list(job["isolation"])
    namespaced = job["tier"] == "unshare"
    die_with_parent(job["parent_pid"])
    try:
        if namespaced:
            enter_namespaces()
            applied += ["userns", "mountns", "pidns", "netns", "ipcns"]
    except (SetupError, OSError) as exc:
        write(out, {"kind": "setup", "error": describe(exc, job["error_chars"])})
        os._exit(SETUP_FAILED)
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(alive_r)
        forward(out, pid)
    os.close(alive_w)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([alive_r], [], [], 0)[0]:  # the forwarder is gone already
        os._exit(SETUP_FAILED)
    os.close(alive_r)
    try:
        if namespaced:
            build_root(job["plan"], job["sysroot"])
            drop_capabilities()
            applied.append("private_tmp")
        os.chdir(job["cwd"])
    except (SetupError, OSError) as exc:
        write(out, {"kind": "setup", "error": describe(exc, job["error_chars"])})
        os._exit(SETUP_FAILED)
    for directory in job["site_dirs"]:
        import site

        site.addsitedir(directory)
    limit(applied, resource.RLIMIT_CORE, 0, "no_core")
    limit(applied, resource.RLIMIT_FSIZE, job["fsize"], "fsize")
    limit(applied, resource.RLIMIT_NOFILE, job["nofile"], "nofile")
    if os.geteuid() != 0:  # the kernel never limits root's processes
        limit(applied, resource.RLIMIT_NPROC, processes_of(os.getuid()) + job["nproc"], "nproc")
    # Hard above soft: SIGXCPU (reported as a timeout) comes before SIGKILL.
    limit(applied, resource.RLIMIT_CPU, job["cpu_s"], "cpu", job["cpu_s"] + 1)
    limit(applied, resource.RLIMIT_AS, job["memory"], "memory")
    if install_seccomp():
        applied.append("seccomp")

    me = os.getpid()

    def emit(**record: object) -> None:
        if os.getpid() == me:  # not from processes the candidate forked
            write(out, record)

    emit(kind="start", isolation=applied)
    run_candidate(job, emit)
    emit(kind="done")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    # Skip interpreter shutdown: candidate threads or atexit hooks could hang it.
    os._exit(0)


if __name__ == "__main__":
    main()
