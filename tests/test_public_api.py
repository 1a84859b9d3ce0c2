"""The public surface is exactly what ``itas.__all__`` says, and the protocol version is documented."""

import re
from pathlib import Path

import itas
from itas import protocol


def test_all_names_exist_and_nothing_else_public_is_exported() -> None:
    for name in itas.__all__:
        assert hasattr(itas, name), name
    public_modules = {"client", "errors", "protocol", "security", "status", "cli"}
    exported_classes = {n for n in dir(itas) if not n.startswith("_") and n not in public_modules}
    assert exported_classes - set(itas.__all__) <= {
        "annotations", "spec", "archon", "plan", "sandbox", "broker", "agents", "orchestrator",
        "search", "benchmarks"}


def test_protocol_version_in_the_readme_matches_the_constant() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(r"wire protocol version (\d+)", readme)
    assert match and int(match.group(1)) == protocol.PROTOCOL_VERSION
    assert protocol.header(protocol.Command.REQUEST)[4] == protocol.PROTOCOL_VERSION
