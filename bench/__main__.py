"""``python -m bench [--quick] [--scenario ingest,reads,cpu,latency,drain,inproc,naive,backfill,soak] [--profile]``.

Installs the benchmark-only requirements (bench/requirements.txt) into the running venv
when they are missing, then hands over to ``bench.runner``.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
NEEDED = ("psutil", "granian")


def ensure_requirements() -> None:
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if not missing:
        return
    print(f"bench: installing {', '.join(missing)} from {REQUIREMENTS.name} into {sys.prefix}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)], check=True)
    importlib.invalidate_caches()


if __name__ == "__main__":
    ensure_requirements()
    import os
    import shlex

    from bench.runner import main

    # `make bench BENCH_ARGS="--quick --scenario drain"` (the Makefile runs plain `python -m bench`).
    argv = sys.argv[1:] or shlex.split(os.environ.get("BENCH_ARGS", ""))
    sys.exit(main(argv))
