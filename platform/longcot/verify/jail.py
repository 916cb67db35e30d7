"""The init process of one sandbox run (stdlib only; started by ``sandbox.py`` through ``unshare``).

It runs as PID 1 of fresh PID, mount and network namespaces, as root there (``seal``), and:
1. makes every mount read-only (recursively) and mounts a small, fresh tmpfs on /tmp, the only
   writable place: nothing the program does can change a file of the host;
2. writes the program's files into /tmp;
3. forks the program: rlimits (CPU, address space, file size, processes, open files, no core), an
   unprivileged uid of its own, no new privileges, a cleared environment; then waits for it.

When this process dies (the program finished, or the parent killed the run), the kernel kills every
process left in the PID namespace: nothing survives a run. Without namespaces (``seal`` false: the
weaker fallback of a machine where ``unshare`` is not allowed) only steps 2 and 3 apply. Exit status: the program's, 128+N for
signal N, and 125 with a line on stderr for a failure of the jail itself.
"""

import ctypes
import json
import os
import resource
import sys

JAIL_FAILED = 125
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MS_NOSUID, MS_NODEV = 0x2, 0x4
PR_SET_NO_NEW_PRIVS = 38
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (new syscalls share one table)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _fail(message):
    sys.stderr.write(f"longcot-jail: {message}\n")
    sys.stderr.flush()
    os._exit(JAIL_FAILED)


def _check(result, what):
    if result != 0:
        _fail(f"{what}: {os.strerror(ctypes.get_errno())}")


def _seal_filesystem(libc, work_bytes, uid):
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    _check(libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)),
           "read-only remount of /")
    options = f"size={work_bytes},mode=0700,uid={uid},gid={uid}".encode()
    _check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, options), "tmpfs on /tmp")


def _run_program(spec):
    limits = spec["limits"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    if spec["drop_to_uid"]:
        uid = spec["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.chdir(spec["workdir"])
    os.execve(spec["argv"][0], spec["argv"], spec["env"])


def main():
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    libc = ctypes.CDLL(None, use_errno=True)
    if spec["seal"]:
        _seal_filesystem(libc, spec["work_bytes"], spec["uid"] if spec["drop_to_uid"] else 0)
    for name, content in spec["files"].items():
        path = os.path.join(spec["workdir"], name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
        if spec["drop_to_uid"]:
            os.chown(path, spec["uid"], spec["uid"])
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            _run_program(spec)
        except BaseException as exc:  # exec failed: say why, as the jail
            _fail(f"cannot start the program: {exc}")
    while True:  # as PID 1, reap every orphan until the program itself ends
        try:
            child, status = os.wait()
        except ChildProcessError:
            _fail("lost the program process")
        if child == pid:
            break
    code = os.waitstatus_to_exitcode(status)  # -N for signal N
    os._exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as exc:
        _fail(f"{type(exc).__name__}: {exc}")
