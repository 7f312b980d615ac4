"""The self-instruct profile: the shipped one loads, a bad one is refused naming file, table and key."""

import pytest

from barbarossa.config import ConfigError
from barbarossa.selfinstruct import settings
from barbarossa.selfinstruct.settings import SelfInstruct


def test_the_default_profile_loads_with_its_teacher_table():
    loaded, teacher = settings.load_profile("default")
    assert loaded == SelfInstruct() and loaded.new_per_request == 17
    assert teacher == {"endpoint": "http://127.0.0.1:8080/v1", "model": "", "backend": "openai"}


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("similarity = 0.7", "similarity = 1.5", r"\[selfinstruct\] similarity must be above 0 and at most 1"),
        ("seeds_per_prompt = 3", "seeds_per_prompt = 3\nseeds = 2", r"\[selfinstruct\] unknown key\(s\) seeds"),
        ("target = 100", "", r"\[selfinstruct\] missing key 'target'"),
        ("tasks_per_request = 20", "tasks_per_request = 3", r"tasks_per_request must be more than seeds_per_prompt"),
        ("max_words = 150", "max_words = 2", r"max_words must be at least min_words"),
        ("top_p = 1.0", 'top_p = "high"', r"top_p must be float"),
        ("[teacher]", "[teachers]", r"unknown table\(s\) \[teachers\]"),
    ],
)
def test_a_bad_profile_is_refused_naming_file_table_and_key(tmp_path, old, new, message):
    text = (settings.profiles_dir() / "default.toml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        settings.load_profile(str(path))
    assert str(path) in str(err.value)


def test_an_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="profile 'nope' not found .*known profiles: default"):
        settings.load_profile("nope")
