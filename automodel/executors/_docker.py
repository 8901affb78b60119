"""Run a candidate in a Docker container through the ``docker`` SDK.

The container has no network, a read-only root filesystem, a private ``/tmp``, its own
PID namespace, memory / CPU / pids limits and a ``shm_size`` large enough for DataLoader
workers; the job directory is its only writable mount, ``ExecutionRequest.readonly_paths``
are mounted read-only at the same paths, and GPUs come through device requests. On a
timeout (or Ctrl-C, or any error of ours) the container is stopped and removed. Logs are
streamed back live.

Two kinds of image work:

* ``host_mounts=True`` (default): a bare root filesystem (see :func:`import_local_image`,
  which needs no registry) and the host's system directories and Python environment
  mounted read-only, as the bubblewrap sandbox does;
* ``host_mounts=False``: a self-contained image with Python, torch and automodel installed
  (``docker-image/Dockerfile`` for GPU hosts; or ``docker-image/build_local_image.sh --full``).
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import structlog

from ._base import EventCallback, Executor, LineCallback, register_executor
from ._models import ComponentError, ExecutionRequest, ExecutionResult, ExecutionStatus, ExecutorError
from ._output import OutputReader, crash_error, read_component_error, read_json_dict
from ._protocol import ERROR_FILE, INFEASIBLE_ERROR_TYPE, RESULT_FILE
from ._sandbox import ETC_ENTRIES, SYSTEM_DIRS, python_paths

__all__ = ["DEFAULT_IMAGE", "DockerExecutor", "docker_problem", "import_local_image"]

DEFAULT_IMAGE = "automodel-local:latest"
log = structlog.get_logger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The ``automodel`` package folder (found without importing the package root, which would be a cycle)."""


def _client(timeout_s: float = 10.0) -> Any:
    import docker

    return docker.from_env(timeout=int(timeout_s))


def docker_problem() -> str | None:
    """Why a Docker engine cannot be used here, or ``None`` when it answers."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker Python package is not installed (pip install docker)"
    try:
        _client(5.0).ping()
    except Exception as exc:  # the SDK raises several types for "no engine"
        return (f"no Docker engine answers ({type(exc).__name__}: {str(exc)[:200]}); start dockerd "
                "(e.g. dockerd --storage-driver=vfs --iptables=false --bridge=none)")
    return None


def import_local_image(tag: str = DEFAULT_IMAGE, *, client: Any = None) -> str:
    """Create ``tag`` with ``docker import`` of a bare root filesystem (no registry needed).

    The image holds only mount points and the usual ``/bin``, ``/lib`` links; use it with
    ``DockerExecutor(host_mounts=True)``, which mounts the host's system and Python read-only.
    """
    client = client or _client(60.0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("usr", "etc", "tmp", "proc", "sys", "dev", "root", "work"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        for name in SYSTEM_DIRS:
            path = Path(name)
            if name != "/usr" and path.is_symlink():
                info = tarfile.TarInfo(name.lstrip("/"))
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                tar.addfile(info)
            elif name != "/usr" and path.is_dir():
                info = tarfile.TarInfo(name.lstrip("/"))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    repository, _, version = tag.partition(":")
    client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=version or "latest")
    return tag


class _LogPump(threading.Thread):
    """Copies the container's log stream into a pipe that an :class:`OutputReader` reads."""

    def __init__(self, container: Any, fd: int) -> None:
        super().__init__(name="automodel-docker-logs", daemon=True)
        self._container, self._fd = container, fd

    def run(self) -> None:
        try:
            for chunk in self._container.logs(stream=True, follow=True):
                os.write(self._fd, chunk)
        except Exception:
            log.debug("docker_log_stream_ended", exc_info=True)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)


@register_executor("docker")
class DockerExecutor(Executor):
    """Runs the child in a container; see the module docstring.

    Args:
        image: the image to run (``docker-image/build_local_image.sh`` or ``docker-image/Dockerfile`` make one).
        host_mounts: mount the host's system directories and Python environment read-only (for a bare
            image); ``False`` for a self-contained image whose Python has automodel installed.
        gpus: GPUs for requests that need them: ``"all"``, a count, or a list of device ids.
        cpus: CPU limit (fractional cores); ``None``: no limit.
        pids_limit: maximum number of processes in the container.
        shm_size: size of ``/dev/shm`` (DataLoader workers share batches through it).
        python: the interpreter inside the image when ``host_mounts`` is ``False``.

    Raises:
        ExecutorError: at construction, when no Docker engine answers.
    """

    isolates_filesystem = True

    def __init__(
        self,
        *,
        image: str = DEFAULT_IMAGE,
        host_mounts: bool = True,
        gpus: str | int | list[str] = "all",
        cpus: float | None = None,
        pids_limit: int = 1024,
        shm_size: str = "2g",
        python: str = "python",
        stop_timeout_s: int = 3,
        tail_lines: int = 80,
    ) -> None:
        problem = docker_problem()
        if problem is not None:
            raise ExecutorError(f"The docker executor cannot start: {problem}.")
        self.client = _client(60.0)
        self.image, self.host_mounts, self.gpus, self.cpus = image, host_mounts, gpus, cpus
        self.pids_limit, self.shm_size, self.python = pids_limit, shm_size, python
        self.stop_timeout_s, self.tail_lines = stop_timeout_s, tail_lines

    # -- what the container gets -----------------------------------------------------------------

    def _mounts(self, request: ExecutionRequest, job_dir: Path) -> list[Any]:
        from docker.types import Mount

        def ro(path: str) -> Any:
            return Mount(target=path, source=path, type="bind", read_only=True)

        mounts = []
        if self.host_mounts:
            mounts += [ro(d) for d in SYSTEM_DIRS if Path(d).is_dir() and not Path(d).is_symlink()]
            mounts += [ro(f"/etc/{e}") for e in ETC_ENTRIES if Path("/etc", e).exists()]
            mounts += [ro(str(p)) for p in python_paths()]
        mounts.append(Mount(target=str(job_dir), source=str(job_dir), type="bind", read_only=False))
        for path in request.readonly_paths:
            real = Path(path).resolve()
            if not real.exists():
                raise ExecutorError(f"readonly path {path} does not exist")
            mounts.append(ro(str(real)))
        return mounts

    def _device_requests(self, request: ExecutionRequest) -> list[Any]:
        if not request.gpus or not Path("/dev/nvidiactl").exists():
            return []
        from docker.types import DeviceRequest

        if isinstance(self.gpus, list):
            return [DeviceRequest(device_ids=[str(g) for g in self.gpus], capabilities=[["gpu"]])]
        count = -1 if self.gpus == "all" else int(self.gpus)
        return [DeviceRequest(count=count, capabilities=[["gpu"]])]

    def _argv(self, request: ExecutionRequest) -> list[str]:
        argv = list(request.argv)
        if not self.host_mounts and Path(argv[0]).name.startswith("python"):
            argv[0] = self.python  # the host's interpreter path means nothing inside a self-contained image
        # A container does not die with the process that started it: `timeout` (coreutils) as its first
        # process ends it after the budget even if the orchestrator was killed and cannot stop it.
        return ["timeout", "-s", "KILL", f"{request.timeout_s + 10:.0f}", *argv]

    def _env(self, request: ExecutionRequest, job_dir: Path) -> dict[str, str]:
        env = {k: os.environ[k] for k in ("LANG", "TZ", "OMP_NUM_THREADS") if k in os.environ}
        env.update(request.env)
        env.update({"PYTHONUNBUFFERED": "1", "HOME": str(job_dir), "TMPDIR": "/tmp"})
        if self.host_mounts:
            env["PYTHONPATH"] = str(_PACKAGE_DIR.parent)
            env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
        return env

    # -- running ---------------------------------------------------------------------------------

    def run(
        self,
        request: ExecutionRequest,
        on_event: EventCallback | None = None,
        on_line: LineCallback | None = None,
    ) -> ExecutionResult:
        """Run ``request.argv`` in a container; see :class:`Executor`.

        Raises:
            ExecutorError: the image is missing or the engine refuses the container.
        """
        import docker.errors

        job_dir = (request.job_dir or request.workdir).resolve()
        log_file = self._prepare(request)
        container = None
        with log_file:
            started = time.monotonic()
            try:
                container = self.client.containers.create(
                    self.image,
                    command=self._argv(request),
                    working_dir=str((request.cwd or job_dir).resolve()),
                    environment=self._env(request, job_dir),
                    mounts=self._mounts(request, job_dir),
                    network_mode="none",
                    read_only=True,
                    tmpfs={"/tmp": "rw,size=1g"},
                    mem_limit=f"{request.memory_limit_mb}m" if request.memory_limit_mb else None,
                    memswap_limit=f"{request.memory_limit_mb}m" if request.memory_limit_mb else None,
                    nano_cpus=int(self.cpus * 1e9) if self.cpus else None,
                    pids_limit=self.pids_limit,
                    shm_size=self.shm_size,
                    device_requests=self._device_requests(request),
                    security_opt=["no-new-privileges"],
                    cap_drop=["ALL"],
                    labels={"automodel": "candidate"},
                )
            except docker.errors.ImageNotFound as exc:
                raise ExecutorError(
                    f"Docker image {self.image!r} is not there. Build it without a registry with "
                    "docker-image/build_local_image.sh (or automodel.executors.import_local_image), or on a GPU host "
                    "with docker build -f docker-image/Dockerfile ."
                ) from exc
            except docker.errors.APIError as exc:
                raise ExecutorError(f"Docker refused the container: {exc}") from exc
            read_fd, write_fd = os.pipe()
            reader = OutputReader(read_fd, log_file, tail_lines=self.tail_lines, on_event=on_event, on_line=on_line)
            forced: ExecutionStatus | None = None
            rc: int | None = None
            try:
                try:
                    container.start()
                except docker.errors.APIError as exc:
                    raise ExecutorError(f"Docker could not start the container: {exc}") from exc
                log.info("executor_started", executor=self.name, container=container.short_id, argv=request.argv)
                pump = _LogPump(container, write_fd)
                pump.start()
                reader.start()
                rc, forced = self._wait(container, request, started)
            finally:
                # Whatever happened (even KeyboardInterrupt), the container does not outlive the run.
                with contextlib.suppress(Exception):
                    container.stop(timeout=self.stop_timeout_s)
                oom = False
                with contextlib.suppress(Exception):
                    container.reload()
                    oom = bool(container.attrs["State"].get("OOMKilled"))
                    rc = rc if rc is not None else int(container.attrs["State"]["ExitCode"])
                with contextlib.suppress(Exception):
                    container.remove(force=True)
                if reader.ident is not None:
                    reader.join(timeout=5.0)
                if reader.is_alive():
                    reader.stop()
                    reader.join()
                with contextlib.suppress(OSError):
                    os.close(read_fd)
            duration = time.monotonic() - started
        if forced is None and oom:
            forced = "oom"
        result = self._collect(request, rc, forced, duration, reader)
        log.info("executor_finished", executor=self.name, status=result.status, returncode=rc,
                 duration_s=round(duration, 2))
        return result

    @staticmethod
    def _prepare(request: ExecutionRequest) -> IO[bytes]:
        try:
            request.workdir.mkdir(parents=True, exist_ok=True)
            for stale in (RESULT_FILE, ERROR_FILE):
                (request.output_dir / stale).unlink(missing_ok=True)
            return request.log_path.open("wb")
        except OSError as exc:
            raise ExecutorError(f"Cannot use workdir {request.workdir} ({exc}); it must be writable.") from exc

    @staticmethod
    def _wait(container: Any, request: ExecutionRequest, started: float) -> tuple[int | None, ExecutionStatus | None]:
        import requests

        remaining = request.timeout_s - (time.monotonic() - started)
        try:
            status = container.wait(timeout=max(remaining, 0.1))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            log.warning("executor_timeout", container=container.short_id, timeout_s=request.timeout_s)
            return None, "timeout"
        return int(status.get("StatusCode", -1)), None

    def _collect(
        self, request: ExecutionRequest, rc: int | None, forced: ExecutionStatus | None, duration: float,
        reader: OutputReader,
    ) -> ExecutionResult:
        tail = list(reader.tail)
        result = read_json_dict(request.output_dir / RESULT_FILE)
        error = read_component_error(request.output_dir / ERROR_FILE)
        status: ExecutionStatus
        if forced is not None:
            status = forced
            error = error or _limit_error(forced, request)
        elif rc == 0 and result is not None and error is None:
            status = "ok"
        else:
            error = error or crash_error(rc, tail)
            status = "infeasible" if error.error_type == INFEASIBLE_ERROR_TYPE else "crashed"
        return ExecutionResult(status=status, returncode=rc, duration_s=duration, log_tail=tail,
                               events=reader.events, error=error, result=result, log_path=request.log_path)


def _limit_error(status: ExecutionStatus, request: ExecutionRequest) -> ComponentError:
    if status == "timeout":
        return ComponentError(component="harness", error_type="Timeout",
                              message=f"The run exceeded its time budget of {request.timeout_s:g} s and its container "
                              "was stopped. Train for fewer epochs or steps, or use a smaller model or input size.")
    return ComponentError(component="harness", error_type="MemoryLimitExceeded",
                          message=f"The container ran out of its {request.memory_limit_mb} MiB memory limit and was "
                          "killed. Lower the batch size, input size, DataLoader workers or model size.")
