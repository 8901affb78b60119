"""Run a candidate inside a bubblewrap (``bwrap``) sandbox: the default on Linux where it starts.

The child sees, read-only, the system directories, the Python environment and the
``automodel`` package, plus ``ExecutionRequest.readonly_paths`` (data and weight files) and
the Hugging Face / torch weight caches when they exist (nothing can be downloaded inside);
its job directory is the only writable place, and a private ``/tmp``. Nothing else of
the host exists inside: not the home directory, the dataset, the run directory or the
host's ``/tmp``. It has no network (``--unshare-all``), its own PID namespace (no
child outlives the run, ``setsid`` or not), ``--die-with-parent`` and ``--new-session``.
Time and memory are supervised as by :class:`LocalExecutor`, over the whole process tree.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import structlog

from ._base import register_executor
from ._local import LocalExecutor
from ._models import ExecutionRequest, ExecutorError
from ._procs import end_tree, tree_pids, tree_rss_mb

__all__ = ["SandboxExecutor", "bwrap_problem"]

log = structlog.get_logger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The ``automodel`` package folder (found without importing the package root, which would be a cycle)."""

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ENTRIES = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "passwd", "group", "nsswitch.conf",
    "localtime", "ssl", "ca-certificates", "hosts",
)
# Environment variables the child keeps; everything else of the parent's environment stays out.
_ENV_KEEP = ("LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
             "NVIDIA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "TORCH_CUDA_ARCH_LIST")


def _bwrap() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot start a sandbox here, or ``None`` when it can (probed once)."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    exe = _bwrap()
    if exe is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install -y bubblewrap)"
    probe = [exe, "--unshare-all", "--die-with-parent", "--new-session", *_system_binds(), "--proc", "/proc",
             "--dev", "/dev", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not be run ({exc})"
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip()[:300]
        return (f"bwrap cannot create namespaces here ({err or f'exit {done.returncode}'}); unprivileged user "
                "namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1) or the container forbids them")
    return None


def _system_binds() -> list[str]:
    args: list[str] = []
    for d in SYSTEM_DIRS:
        path = Path(d)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), d]
        elif path.is_dir():
            args += ["--ro-bind", d, d]
    for name in ETC_ENTRIES:
        if Path("/etc", name).exists():
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    return args


def python_paths() -> list[Path]:
    """What the harness needs of this Python: its prefixes, site-packages and the automodel package."""
    paths = {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    for key in ("purelib", "platlib", "stdlib", "platstdlib"):
        with_key = sysconfig.get_paths().get(key)
        if with_key:
            paths.add(Path(with_key))
    paths.add(Path(sys.executable).resolve().parent)
    paths.add(_PACKAGE_DIR)
    return sorted(p for p in paths if p.exists())


def weight_caches() -> dict[str, Path]:
    """Pretrained-weight caches to show read-only (no network inside: downloads must happen before)."""
    home = Path.home()
    caches = {
        "HF_HOME": Path(os.environ.get("HF_HOME", home / ".cache" / "huggingface")),
        "TORCH_HOME": Path(os.environ.get("TORCH_HOME", home / ".cache" / "torch")),
    }
    return {key: path.resolve() for key, path in caches.items() if path.is_dir()}


def _gpu_args() -> list[str]:
    args: list[str] = []
    dev = Path("/dev")
    for node in sorted(dev.glob("nvidia*")):
        args += ["--dev-bind", str(node), str(node)]
    if args and Path("/sys").is_dir():
        args += ["--ro-bind", "/sys", "/sys"]
    return args


@register_executor("sandbox")
class SandboxExecutor(LocalExecutor):
    """Runs the child under bubblewrap; see the module docstring for what it sees.

    Raises:
        ExecutorError: at construction, when bubblewrap cannot start here (the message says why).
    """

    isolates_filesystem = True

    def __init__(self, *, poll_interval_s: float = 0.1, kill_grace_s: float = 3.0, tail_lines: int = 80) -> None:
        super().__init__(poll_interval_s=poll_interval_s, kill_grace_s=kill_grace_s, tail_lines=tail_lines)
        problem = bwrap_problem()
        if problem is not None:
            raise ExecutorError(f"The sandbox executor cannot start: {problem}. Install bubblewrap, or choose "
                                "--executor docker (contained) or --executor local (no isolation).")
        exe = _bwrap()
        assert exe is not None  # bwrap_problem() found it
        self._exe = exe

    def _command(self, request: ExecutionRequest) -> tuple[list[str], dict[str, str]]:
        job_dir = (request.job_dir or request.workdir).resolve()
        cwd = (request.cwd or job_dir).resolve()
        args = [self._exe, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
                *_system_binds(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        # Later binds sit on top of earlier ones: the read-only inputs after the writable job dir,
        # so a data file hard-linked into the job directory stays read-only.
        for path in python_paths():
            args += ["--ro-bind", str(path), str(path)]
        args += ["--bind", str(job_dir), str(job_dir)]
        for path in request.readonly_paths:
            real = Path(path).resolve()
            if not real.exists():
                raise ExecutorError(f"readonly path {path} does not exist; every ExecutionRequest.readonly_paths "
                                    "entry must be an existing file or folder")
            args += ["--ro-bind", str(real), str(real)]
        if request.gpus:
            args += _gpu_args()
        caches = weight_caches()
        for path in caches.values():
            args += ["--ro-bind", str(path), str(path)]
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        env.update({key: str(path) for key, path in caches.items()})
        env.update(request.env)
        env.update({"PYTHONUNBUFFERED": "1", "HOME": str(job_dir), "TMPDIR": "/tmp",
                    "PATH": "/usr/local/bin:/usr/bin:/bin",
                    "PYTHONPATH": str(_PACKAGE_DIR.parent)})
        for key, value in env.items():
            args += ["--setenv", key, value]
        args += ["--chdir", str(cwd), "--", *request.argv]
        return args, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def _members(self, proc: subprocess.Popen[bytes]) -> list[int]:
        return tree_pids(proc.pid)

    def _rss_mb(self, proc: subprocess.Popen[bytes]) -> float:
        return tree_rss_mb(proc.pid)

    def _kill_all(self, proc: subprocess.Popen[bytes]) -> list[int]:
        # The PID namespace ends with its first process; killing the whole tree is quicker and surer.
        return end_tree(proc.pid, grace_s=self.kill_grace_s)
