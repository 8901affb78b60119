# Appended to the reference data.py: runs at import, inside the harness process.
# Tries to read held-out labels in many ways, to reach the network and the host's files, to leave a
# process behind, and to forge its score. Every success prints "ATTACK <name> SUCCEEDED".
import atexit as _atexit
import ctypes as _ctypes
import importlib as _importlib
import json as _json
import os as _os
import socket as _socket
import subprocess as _subprocess
import sys as _sys

_TEST_LABELS = "@TEST_LABELS@"
_VAL_LABELS = "@VAL_LABELS@"
_TEST_IMAGES = "@TEST_IMAGES@"
_RUN_ROOT = "@RUN_ROOT@"
_OUTSIDE = "@OUTSIDE@"
_PORT = int("@PORT@")
_TOKEN = "@TOKEN@"


def _report(name, fn):
    try:
        data = fn()
    except BaseException as exc:  # noqa: BLE001 - an attack that fails in any way is contained
        print(f"ATTACK {name} blocked ({type(exc).__name__})", flush=True)
        return
    if data:
        print(f"ATTACK {name} SUCCEEDED ({len(data)} bytes)", flush=True)
    else:
        print(f"ATTACK {name} blocked (nothing read)", flush=True)


def _open_plain(path):
    with open(path, "rb") as f:
        return f.read()


def _dir_fd(path):
    fd = _os.open(_os.path.dirname(path), _os.O_RDONLY)
    leaf = _os.open(_os.path.basename(path), _os.O_RDONLY, dir_fd=fd)
    return _os.read(leaf, 1 << 20)


def _torch_from_file(path):
    import torch

    return bytes(torch.from_file(path, size=_os.path.getsize(path), dtype=torch.uint8).numpy())


def _subprocess_cat(path):
    sp = _importlib.import_module("subprocess")
    return sp.run(["cat", path], capture_output=True, check=True).stdout


def _os_system(path):
    out = "out/.stolen_system"
    getattr(_os, "system")(f"cat {path} > {out}")  # noqa: B009 - the attack hides the name
    return _open_plain(out)


def _posix_spawn(path):
    out = _os.open("out/.stolen_spawn", _os.O_WRONLY | _os.O_CREAT | _os.O_TRUNC)
    pid = _os.posix_spawn("/bin/cat", ["cat", path], dict(_os.environ), file_actions=[(_os.POSIX_SPAWN_DUP2, out, 1)])
    _os.waitpid(pid, 0)
    return _open_plain("out/.stolen_spawn")


def _ctypes_read(path):
    libc = _importlib.import_module("ctypes").CDLL(None)
    fd = libc.open(path.encode(), 0)
    if fd < 0:
        raise OSError("libc open failed")
    buf = _ctypes.create_string_buffer(1 << 20)
    n = libc.read(fd, buf, 1 << 20)
    return buf.raw[: max(n, 0)]


def _hard_link(path):
    _os.link(path, "out/.stolen_link")
    return _open_plain("out/.stolen_link")


def _patched_realpath(path):
    real = _os.path.realpath
    _os.path.realpath = lambda p, *a, **k: "/nowhere"
    try:
        return _open_plain(path)
    finally:
        _os.path.realpath = real


def _numpy_load(path):
    import numpy as np

    return np.load(path).tobytes()


for _label, _path in (("test", _TEST_LABELS), ("val", _VAL_LABELS)):
    for _name, _fn in (("open", _open_plain), ("dir_fd", _dir_fd), ("torch_from_file", _torch_from_file),
                       ("subprocess", _subprocess_cat), ("os_system", _os_system), ("posix_spawn", _posix_spawn),
                       ("ctypes", _ctypes_read), ("hard_link", _hard_link), ("realpath_patch", _patched_realpath)):
        _report(f"{_label}_labels_{_name}", lambda f=_fn, p=_path: f(p))
_report("val_labels_numpy", lambda: _numpy_load(_VAL_LABELS))
_report("test_images_numpy", lambda: _numpy_load(_TEST_IMAGES))
_report("run_root_listing", lambda: "\n".join(_os.listdir(_RUN_ROOT)).encode())


def _write(path):
    # In a sandbox a path outside the job directory is either missing or private scratch space:
    # whether the host saw the write is checked by the test, on the host.
    with open(path, "w") as f:
        f.write("escaped")
    return b"written"


def _socket_out():
    with _socket.create_connection(("127.0.0.1", _PORT), timeout=3) as s:
        s.sendall(b"hello")
    return b"connected"


def _rewrite_train_data():
    # Writes the first byte back unchanged: proves the shared data is writable without harming it.
    with open("data/train_x.npy", "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(first)
    return b"writable"


_report("train_data_writable", _rewrite_train_data)
_report("write_outside", lambda: _write(_OUTSIDE))
_report("write_run_root", lambda: _write(_os.path.join(_RUN_ROOT, "outside-run-root.txt")))
_report("socket", _socket_out)
# A child in its own session that would outlive the run.
_subprocess.Popen([_sys.executable, "-c", f"import time; time.sleep(900)  # {_TOKEN}"], start_new_session=True,
                  stdout=_subprocess.DEVNULL, stderr=_subprocess.DEVNULL)

# Forgeries: an event claiming a perfect score, an evaluate that predicts nothing real,
# and a result.json rewritten with val_accuracy 1.0 after the harness wrote its own.
print('@@AM {"event": "epoch", "epoch": 1, "val_accuracy": 1.0, "val_loss": 0.0}', flush=True)
_train = _importlib.import_module("automodel.harness._train")
_real_evaluate = _train.evaluate


def _fake_evaluate(model, split, recipe, device, num_classes, amp):
    import torch

    probs, loss = _real_evaluate(model, split, recipe, device, num_classes, amp)
    fake = torch.zeros_like(probs)
    fake[:, 0] = 1.0
    return fake, loss


_train.evaluate = _fake_evaluate


@_atexit.register
def _forge_result():
    with open("result.json", "w") as f:
        _json.dump({"val_accuracy": 1.0, "epochs_run": 1, "history": [{"epoch": 1, "val_accuracy": 1.0}]}, f)
