"""The one place that talks to Kaggle: download a competition, submit a file, read its score.

Everything goes through the official ``kaggle`` package (its ``KaggleApi``); any object with
the same three methods (:class:`KaggleApiLike`) can stand in for it, which is how the tests
run offline. Failures become a :class:`KaggleError` whose message says what to do: missing
credentials, rules not accepted, unknown competition, no network.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

__all__ = [
    "KaggleApiLike",
    "KaggleError",
    "SubmitResult",
    "download_competition",
    "find_credentials",
    "official_api",
    "submit",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")
_DONE_MARKER = ".automodel-kaggle.json"


class KaggleError(RuntimeError):
    """A Kaggle operation failed; the message says why and what to do."""


class KaggleApiLike(Protocol):
    """The part of ``kaggle.api.kaggle_api_extended.KaggleApi`` used here."""

    def competition_download_files(self, competition: str, path: str | None = None, force: bool = False,
                                   quiet: bool = True, unzip: bool = False) -> None: ...

    def competition_submit(self, file_name: str | None, message: str, competition: str | None,
                           quiet: bool = False) -> Any: ...

    def competition_submissions(self, competition: str) -> list[Any] | None: ...


@dataclass(frozen=True)
class SubmitResult:
    """What Kaggle said about a submission."""

    message: str
    status: str
    """``complete``, ``pending`` (still scoring when we stopped waiting), ``error`` or ``unknown``."""
    public_score: str | None = None
    error: str = ""


def _config_dir(env: Mapping[str, str]) -> Path:
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"]).expanduser()
    home = Path(env.get("HOME") or Path.home())
    legacy = home / ".kaggle"
    if legacy.exists():
        return legacy
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"


def find_credentials(env: Mapping[str, str] | None = None) -> str | None:
    """Where the Kaggle credentials are (a description), or ``None`` when there are none."""
    env = os.environ if env is None else env
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if env.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    folder = _config_dir(env)
    config = folder / "kaggle.json"
    if config.is_file():
        try:
            values = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KaggleError(f"{config} is not valid JSON ({exc}); download a new one from "
                              "https://www.kaggle.com/settings (API -> Create New Token).") from exc
        if isinstance(values, dict) and values.get("username") and values.get("key"):
            return str(config)
        raise KaggleError(f"{config} needs both 'username' and 'key'; download a new one from "
                          "https://www.kaggle.com/settings (API -> Create New Token).")
    if (folder / "access_token").is_file():
        return str(folder / "access_token")
    return None


def official_api() -> KaggleApiLike:
    """An authenticated ``KaggleApi`` of the official package.

    Raises:
        KaggleError: the package is missing, or there are no (valid) credentials.
    """
    where = find_credentials()
    if where is None:
        raise KaggleError(
            "No Kaggle credentials: put kaggle.json (from https://www.kaggle.com/settings, API -> Create New "
            "Token) in ~/.kaggle/kaggle.json with chmod 600, or set KAGGLE_USERNAME and KAGGLE_KEY."
        )
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        raise KaggleError(f"The kaggle package is not installed ({exc}); pip install kaggle") from exc
    except SystemExit as exc:  # the package authenticates at import and exits on failure
        raise KaggleError(f"Kaggle rejected the credentials from {where}; create a new API token.") from exc
    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit as exc:
        raise KaggleError(f"Kaggle rejected the credentials from {where}; create a new API token.") from exc
    log.info("kaggle.authenticated", credentials=where)
    return api


def _status_code(exc: BaseException) -> int | None:
    code = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(code, int):
        return code
    code = getattr(exc, "status", None)
    return code if isinstance(code, int) else None


def _is_network(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"ConnectionError", "Timeout", "NewConnectionError", "MaxRetryError", "ProxyError"}) or \
        isinstance(exc, (socket.gaierror, socket.timeout, ConnectionError))


def _call(what: str, slug: str, fn: Callable[[], T]) -> T:
    """Run one API call; turn its failure into a :class:`KaggleError` that says what to do."""
    try:
        return fn()
    except KaggleError:
        raise
    except Exception as exc:  # the client raises requests/urllib3/kagglesdk errors; each is translated
        code = _status_code(exc)
        url = f"https://www.kaggle.com/competitions/{slug}"
        if code == 403:
            raise KaggleError(f"{what} {slug!r}: Kaggle answered 403 Forbidden: accept the competition's rules "
                              f"first at {url}/rules (signed in as the account of your API token).") from exc
        if code == 401:
            raise KaggleError(f"{what} {slug!r}: Kaggle answered 401 Unauthorized: the API token is wrong or "
                              "expired; create a new one at https://www.kaggle.com/settings.") from exc
        if code == 404:
            raise KaggleError(f"{what} {slug!r}: no such competition (404); check the slug in {url}.") from exc
        if code == 429:
            raise KaggleError(f"{what} {slug!r}: Kaggle rate-limited the request (429); wait and retry "
                              "(submissions are limited per day).") from exc
        if _is_network(exc):
            raise KaggleError(f"{what} {slug!r}: cannot reach kaggle.com ({type(exc).__name__}: {exc}); check the "
                              "network connection or proxy, or download the data elsewhere and pass --data DIR.") from exc
        raise KaggleError(f"{what} {slug!r} failed: {type(exc).__name__}: {exc}") from exc


def _safe_extract(archive: Path, *, own_folder: bool) -> None:
    """Extract ``archive`` beside itself; with ``own_folder``, files without a folder of their own go into
    ``<stem>/`` (a nested ``train.zip`` of bare images becomes ``train/``)."""
    dest = archive.parent.resolve()
    with zipfile.ZipFile(archive) as zf:
        members = zf.namelist()
        for name in members:
            target = (dest / name).resolve()
            if dest != target and dest not in target.parents:
                raise KaggleError(f"{archive} holds {name!r}, which would land outside {dest}; not extracting it.")
        files = [n for n in members if not n.endswith("/")]
        flat = own_folder and len(files) > 1 and all("/" not in n for n in files)
        zf.extractall(dest / archive.name.removesuffix(".zip") if flat else dest)


def _unpack(dest: Path, top: Path | None) -> None:
    """Extract the downloaded archive ``top`` into ``dest``, then the zips it held; remove the archives."""
    for _round in range(3):
        archives = sorted(dest.rglob("*.zip"))
        if not archives:
            return
        for archive in archives:
            try:
                _safe_extract(archive, own_folder=archive != top)
            except zipfile.BadZipFile as exc:
                raise KaggleError(f"{archive} is not a valid zip ({exc}); delete {dest} and download again.") from exc
            archive.unlink()


def download_competition(slug: str, dest: Path, *, api: KaggleApiLike | None = None, force: bool = False) -> Path:
    """Download and unpack competition ``slug`` into ``dest`` (kept and reused unless ``force``).

    Raises:
        KaggleError: no credentials, rules not accepted, unknown competition, no network, bad archive.
    """
    dest = Path(dest).expanduser()
    marker = dest / _DONE_MARKER
    if marker.is_file() and not force:
        log.info("kaggle.download.cached", competition=slug, path=str(dest))
        return dest
    if force and dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    client = api or official_api()
    _call("Downloading", slug, lambda: client.competition_download_files(slug, path=str(dest), force=force, quiet=True))
    _unpack(dest, dest / f"{slug}.zip")
    files = [p for p in dest.rglob("*") if p.is_file()]
    if not files:
        raise KaggleError(f"Downloading {slug!r} left no files in {dest}; check the competition page for its data.")
    marker.write_text(json.dumps({"competition": slug, "time": time.time(), "files": len(files)}), encoding="utf-8")
    log.info("kaggle.download.done", competition=slug, path=str(dest), files=len(files))
    return dest


def _status_name(status: Any) -> str:
    name = str(getattr(status, "name", status) or "unknown").lower()
    return name.removeprefix("submissionstatus.")


def submit(slug: str, csv_path: Path, message: str, *, api: KaggleApiLike | None = None, wait_s: float = 120.0,
           poll_s: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> SubmitResult:
    """Submit ``csv_path`` to ``slug`` and wait up to ``wait_s`` for its public score.

    Raises:
        KaggleError: the file is missing, or Kaggle refused the submission (see :func:`download_competition`).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise KaggleError(f"{csv_path} does not exist; run the competition first (it writes submission.csv).")
    client = api or official_api()
    response = _call("Submitting to", slug, lambda: client.competition_submit(str(csv_path), message, slug, quiet=True))
    said = str(getattr(response, "message", "") or "")
    if said and "could not" in said.lower():
        raise KaggleError(f"Submitting to {slug!r}: Kaggle said {said!r}; check the network and retry.")
    waited = 0.0
    while True:
        subs = _call("Reading the submissions of", slug, lambda: client.competition_submissions(slug)) or []
        mine = next((s for s in subs if s is not None and getattr(s, "description", None) == message), None)
        mine = mine or next((s for s in subs if s is not None), None)
        if mine is not None:
            status = _status_name(getattr(mine, "status", None))
            score = getattr(mine, "public_score", None) or getattr(mine, "publicScore", None)
            if status == "error":
                return SubmitResult(said, "error", None, str(getattr(mine, "error_description", "") or ""))
            if status == "complete" or score not in (None, ""):
                return SubmitResult(said, "complete", str(score) if score not in (None, "") else None)
        if waited >= wait_s:
            return SubmitResult(said, "pending" if mine is not None else "unknown", None)
        sleep(poll_s)
        waited += poll_s
