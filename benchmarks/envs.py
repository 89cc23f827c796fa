"""The benchmarks' own virtualenvs (peers' and FLAML's), kept apart from the project's `.venv` so
their pins never meet ours."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def ensure_venv(
    env: Path, pins: Sequence[str], probe: str, pip_log: Path, log: Callable[[str], None]
) -> Path:
    """``env``'s python, after creating the virtualenv with ``pins`` when ``probe`` (Python source)
    fails in it: missing, broken, or other versions. pip's output goes to ``pip_log``."""
    python = env / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0:
        return python
    log(f"creating {env} (pip install {' '.join(pins)}; ~2 min)")
    base = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(base), "-m", "venv", str(env)], check=True, timeout=300)
    pip_log.parent.mkdir(parents=True, exist_ok=True)
    with pip_log.open("w") as fh:
        subprocess.run(
            [str(python), "-m", "pip", "install", *pins],
            check=True,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    subprocess.run([str(python), "-c", probe], check=True)
    return python
