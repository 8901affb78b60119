#!/usr/bin/env bash
# Build a Docker image for the docker executor with no registry: `docker import` of a root filesystem.
#
#   docker-image/build_local_image.sh          a bare root filesystem (mount points, /bin -> usr/bin links):
#                                        the executor's default, DockerExecutor(host_mounts=True), mounts
#                                        this machine's system directories and Python environment read-only
#   docker-image/build_local_image.sh --full   a self-contained root filesystem from this machine's /usr, /etc,
#                                        Python environment and automodel package (several GB):
#                                        use DockerExecutor(host_mounts=False)
#
# TAG=name:tag overrides the image name (default automodel-local:latest). Run it with the Python
# environment that runs AutoModel activated.
set -euo pipefail
TAG=${TAG:-automodel-local:latest}

if [ "${1:-}" != "--full" ]; then
  exec python -c "import sys; from automodel.executors import import_local_image; print(import_local_image(sys.argv[1]))" "$TAG"
fi

paths=$(python - <<'PY'
import os
from automodel.executors import python_paths
keep = ["usr", "etc", "bin", "sbin", "lib", "lib64"]
keep += [str(p).lstrip("/") for p in python_paths()]
print(" ".join(p for p in dict.fromkeys(keep) if os.path.lexists("/" + p)))
PY
)
pkg_parent=$(python -c "import automodel, os; print(os.path.dirname(os.path.dirname(automodel.__file__)))")
venv_bin=$(python -c "import sys, os; print(os.path.join(sys.prefix, 'bin'))")
# shellcheck disable=SC2086  # word splitting of $paths is intended
tar -C / --numeric-owner --exclude='*/__pycache__' -cf - $paths \
  | docker import \
      --change "ENV PATH=${venv_bin}:/usr/local/bin:/usr/bin:/bin" \
      --change "ENV PYTHONPATH=${pkg_parent}" \
      - "$TAG"
echo "$TAG"
