"""The training image installs exactly the project's pins (one source of truth) and the library."""

import re

from conftest import ROOT

PIN = re.compile(r"\b([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s'\"\\]*)")


def constraints() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {m.group(1).lower(): m.group(2) for line in lines if (m := PIN.match(line))}


def test_every_pin_in_the_dockerfile_and_makefile_is_the_constraints_pin():
    pins = constraints()
    for path in ("containers/Dockerfile", "Makefile"):
        for name, version in PIN.findall((ROOT / path).read_text()):
            assert pins.get(name.lower()) == version, f"{path}: {name}=={version} vs constraints.txt {pins.get(name.lower())}"


def test_direct_dependencies_agree_with_constraints():
    pins = constraints()
    pyproject = (ROOT / "pyproject.toml").read_text()
    direct = PIN.findall(pyproject.split("[project.scripts]")[0])
    assert len(direct) > 10
    for name, version in direct:
        assert pins.get(name.lower()) == version, f"pyproject.toml {name}=={version} vs constraints.txt"


def test_dockerfile_installs_the_package_with_the_constraints_as_a_non_root_user():
    text = (ROOT / "containers" / "Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*-c constraints\.txt", text) and "COPY barbarossa ./barbarossa" in text
    assert "python3.11" in text and re.search(r"^USER (?!root)\w+", text, re.M) and "VOLUME [\"/cache\"]" in text
    assert re.search(r"^FROM nvidia/cuda:[^\s]*runtime", text, re.M)
