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
            assert pins.get(name.lower()) == public, (
                f"{path}: {name}=={version} vs constraints.txt {pins.get(name.lower())}"
            )


def test_direct_dependencies_agree_with_constraints():
    pins = constraints()
    pyproject = (ROOT / "pyproject.toml").read_text()
    direct = PIN.findall(pyproject.split("[project.scripts]")[0])
    assert len(direct) > 10
    for name, version in direct:
        assert pins.get(name.lower()) == version, f"pyproject.toml {name}=={version} vs constraints.txt"


def dockerfile() -> str:
    return (ROOT / "containers" / "Dockerfile").read_text()


def build_args(text: str) -> dict[str, str]:
    """Each ARG's default: what `docker build` takes when the build does not pass it (production's values)."""
    return dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))


def run_instructions(text: str) -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    return [m.group(1) for m in re.finditer(r"^RUN ((?:.*\\\n)*.*)$", text.replace("\r", ""), re.M)]


def test_the_default_torch_build_is_the_constraints_pin_from_the_pytorch_cuda_index():
    args = build_args(dockerfile())
    version, tag = args["TORCH_BUILD"].split("+")
    assert version == constraints()["torch"] and re.fullmatch(r"cu\d+", tag)
    assert args["TORCH_INDEX"] == f"https://download.pytorch.org/whl/{tag}"


def test_the_torch_index_serves_torch_alone_and_before_anything_of_the_project():
    text = dockerfile()
    [index_run] = [run for run in run_instructions(text) if "${TORCH_INDEX}" in run]
    installs = re.findall(r"pip install ((?:[^&]|&(?!&))*)", index_run)
    from_index = [i for i in installs if "--index-url ${TORCH_INDEX}" in i]
    assert len(from_index) == 1 and "--no-deps" in from_index[0], "the index serves torch alone, not its dependencies"
    assert "--extra-index-url" not in text
    assert text.index(index_run) < text.index("\nCOPY "), "torch (and its CUDA libraries) come before any COPY"
    [torch_layer] = [run for run in run_instructions(text) if run == index_run]
    assert re.search(r"pip install torch==\$\{TORCH_BUILD\}\s*$", torch_layer), "torch's own requirements, same layer"


def test_dependencies_install_under_the_constraints_before_the_code_is_copied():
    text = dockerfile()
    project = next(run for run in run_instructions(text) if re.search(r"pip install [^\n]*-c \S*constraints\.txt", run))
    assert text.index(project) < text.index("COPY barbarossa "), "a code change must not reinstall the dependencies"
    copies = re.findall(r"^COPY (.+)$", text, re.M)
    assert copies[0].split()[:-1] == ["pyproject.toml", "constraints.txt"], "only the pins before the dependency layer"


def test_the_runtime_user_owns_its_working_directory_home_and_cache():
    text = dockerfile()
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] != "root"
    workdir = re.findall(r"^WORKDIR (\S+)$", text, re.M)[-1]
    home = re.search(r"HOME=(\S+)", text).group(1)
    owned = " ".join(run for run in run_instructions(text) if "chown" in run)
    for folder in (workdir, home, "/cache"):
        assert re.search(rf"chown {user[-1]}\S* [^&]*{re.escape(folder)}(\s|$)", owned), f"{folder} is not the user's"
    assert 'VOLUME ["/cache"]' in text and "BARBAROSSA_HOME=/opt/barbarossa" in text


def test_base_image_is_cuda_base_of_torch_s_cuda_version_without_its_own_cuda_libraries():
    args = build_args(dockerfile())
    image = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-([a-z-]+)-ubuntu(\d+)\.04", args["BASE_IMAGE"])
    assert image, "BASE_IMAGE defaults to nvidia/cuda:<version>-base-ubuntu<version>"
    major, minor, flavour, ubuntu = image.groups()
    assert flavour == "base", (
        f"{flavour}: torch's wheels bring cuDNN and the CUDA libraries; a runtime image doubles them"
    )
    assert args["TORCH_BUILD"].endswith(f"+cu{major}{minor}"), "the image's CUDA version is the torch build's"
    assert int(ubuntu) >= 24, "Ubuntu 22.04's python3.11 is a release candidate (3.11.0~rc1)"
