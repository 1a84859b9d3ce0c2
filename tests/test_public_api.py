"""The public surface is exactly what ``itas.__all__`` says, and the protocol version is documented."""

import inspect
import re
from pathlib import Path

import itas
from itas import protocol


def test_all_names_exist_and_every_public_class_or_function_is_listed() -> None:
    for name in itas.__all__:
        assert hasattr(itas, name), name
    public = {name for name, value in vars(itas).items()
              if not name.startswith("_") and not inspect.ismodule(value)
              and name != "annotations"}
    assert public == set(itas.__all__) - {"__version__"}


def test_protocol_version_in_the_readme_matches_the_constant() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(r"wire protocol version (\d+)", readme)
    assert match and int(match.group(1)) == protocol.PROTOCOL_VERSION
    assert protocol.header(protocol.Command.REQUEST)[4] == protocol.PROTOCOL_VERSION
