# Appended to the reference data.py: leaves a setsid child behind, then hangs in build_data.
import subprocess as _subprocess
import sys as _sys
import time as _time

_TOKEN = "@TOKEN@"
_subprocess.Popen([_sys.executable, "-c", f"import time; time.sleep(900)  # {_TOKEN}"], start_new_session=True,
                  stdout=_subprocess.DEVNULL, stderr=_subprocess.DEVNULL)
_build_data = build_data  # noqa: F821 - defined by the reference data.py this is appended to


def build_data(spec):  # noqa: F811
    _time.sleep(900)
    return _build_data(spec)
