"""mypy over the installed ``itas`` namespace, as users import it.

The repository maps top-level folders into one package (pyproject's
``package-dir``); an editable install resolves that with an import hook mypy
cannot follow. This script builds the same tree out of symlinks in a temporary
directory and runs ``mypy -p itas`` there, so every module is checked under the
name it is imported by. Usage: ``python .ci/typecheck.py [mypy options]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_tree(root: Path) -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
        target = root.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for source in (REPO / folder).iterdir():
            if source.suffix in (".py", ".pyi") or source.name == "py.typed":
                os.symlink(source, target / source.name)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="itas-typecheck-") as tmp:
        build_tree(Path(tmp))
        command = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                   "-p", "itas", *sys.argv[1:]]
        return subprocess.call(command, cwd=tmp, env={**os.environ, "MYPYPATH": tmp})


if __name__ == "__main__":
    raise SystemExit(main())
