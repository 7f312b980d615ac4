import pytest

from barbarossa import config, registry

BASE = '[[base]]\nname = "b"\nsource = "tiny:llama"\nfamily = "llama"\n'
CAND = '[[candidate]]\nname = "c"\nbase = "b"\nlora = { r = 4, alpha = 8, targets = "attention" }\n'


def write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_rosters_validate():
    rosters = registry.all_rosters()
    assert {"local", "tiny"} <= set(rosters)
    local = rosters["local"]
    assert len(local.candidates) >= 2 and all(c.base.source.startswith("wheel-gguf:") for c in local.candidates)
    assert {c.base.family for c in rosters["tiny"].candidates} >= {"llama", "gpt2"}


def test_valid_roster_parses(tmp_path):
    roster = registry.load_roster(write(tmp_path, BASE + CAND))
    assert roster.candidates[0].lora == registry.Lora(r=4, alpha=8, dropout=0.05, targets="attention")


@pytest.mark.parametrize("text, message", [
    (BASE.replace("llama\"", "llamaa\""), "unknown family 'llamaa'"),
    (BASE + BASE + CAND, "duplicate base name 'b'"),
    (BASE + CAND + CAND, "duplicate name 'c'"),
    (BASE.replace('source = "tiny:llama"\n', ""), "base 'b': missing field 'source'"),
    (BASE + CAND.replace('base = "b"', 'base = "x"'), "candidate 'c': unknown base 'x'"),
    (BASE + CAND.replace("r = 4", "rank = 4"), "bad lora table"),
    (BASE, "no [[candidate]] entries"),
    ("name = ", "not valid TOML"),
])
def test_invalid_rosters_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(registry.RosterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        registry.load_roster(write(tmp_path, text))


def test_select_by_roster_and_candidate_name():
    assert [c.name for c in registry.select("tiny")] == ["tiny-llama-lora", "tiny-gpt2-lora"]
    assert [c.name for c in registry.select("tiny-gpt2-lora")] == ["tiny-gpt2-lora"]
    with pytest.raises(registry.RosterError, match="neither a roster"):
        registry.select("gpt-5")


def test_work_items_put_one_baseline_per_base_first():
    items = registry.work_items(registry.select("local"))
    assert [i["kind"] for i in items] == ["baseline", "candidate", "candidate"]
    assert items[0]["lora"] is None and items[1]["base"] == items[0]["base"]


def test_profiles_validate_and_override():
    profile = config.load_profile("cpu")
    assert profile["train"]["max_steps"] > 0 and profile["policy"]["primary"] == "eval_loss"
    assert config.with_overrides(profile, max_steps=3)["train"]["max_steps"] == 3
    assert config.with_overrides(profile, max_steps=0) == profile


def test_bad_profile_is_refused(tmp_path):
    text = (config.profiles_dir() / "cpu.toml").read_text().replace("batch_size = 8", 'batch_size = "8"', 1)
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=r"\[train\] batch_size must be int"):
        config.load_profile(str(path))
    with pytest.raises(config.ConfigError, match="known profiles"):
        config.load_profile("nope")
