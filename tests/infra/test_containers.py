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
            public = version.split("+")[0]  # torch==2.13.0+cu128 is the CUDA build of constraints' torch==2.13.0
            assert pins.get(name.lower()) == public, f"{path}: {name}=={version} vs constraints.txt {pins.get(name.lower())}"


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


def run_instructions(text: str) -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    return [m.group(1) for m in re.finditer(r"^RUN ((?:.*\\\n)*.*)$", text.replace("\r", ""), re.M)]


def test_dockerfile_takes_torch_s_cuda_build_from_the_pytorch_index_and_nothing_else():
    text = (ROOT / "containers" / "Dockerfile").read_text()
    torch = re.findall(r"\btorch==([0-9][^\s+]*)\+(cu\d+)", text)
    assert len(torch) == 1, "exactly one explicit torch==<version>+cu<NNN> install"
    (version, tag), = torch
    assert version == constraints()["torch"]
    index_runs = [run for run in run_instructions(text) if "download.pytorch.org" in run]
    assert len(index_runs) == 1 and "--extra-index-url" not in text
    index_run = index_runs[0]
    assert re.search(rf"--index-url https://download\.pytorch\.org/whl/{tag}\s", index_run)
    installs = re.findall(r"pip install ((?:[^&]|&(?!&))*)", index_run)
    assert len(installs) == 1 and "--no-deps" in installs[0], "the index serves torch alone, not its dependencies"
    packages = [word for word in installs[0].split() if not word.startswith("-") and "://" not in word and word != "\\"]
    assert packages == [f"torch=={version}+{tag}"], packages
    project = next(i for i, run in enumerate(run_instructions(text)) if "-c constraints.txt" in run)
    assert run_instructions(text).index(index_run) < project, "torch is installed before the project"


def test_base_image_is_cuda_base_of_torch_s_cuda_version_without_its_own_cuda_libraries():
    text = (ROOT / "containers" / "Dockerfile").read_text()
    image = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-([a-z-]+)-ubuntu", text, re.M)
    assert image, "FROM nvidia/cuda:<version>-base-ubuntu<version>"
    major, minor, flavour = image.groups()
    assert flavour == "base", f"{flavour}: torch's wheels bring cuDNN and the CUDA libraries; a runtime image doubles them"
    assert f"+cu{major}{minor}" in text, "the image's CUDA version is the torch build's"
