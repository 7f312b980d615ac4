import pytest
from metaflow.exception import MetaflowException

from barbarossa import config
from barbarossa.models import roster

BASE = (
    '[[base]]\nname = "b"\nsource = "tiny:llama"\nfamily = "llama"\ncertainty = "confirmed"\n'
    'licence = "MIT"\nparams = "1.3B"\n'
)
CAND = '[[candidate]]\nname = "c"\nbase = "b"\nlora = { r = 4, alpha = 8, targets = "attention" }\n'


def write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_rosters_validate():
    rosters = roster.all_rosters()
    assert {"local", "tiny", "seed"} <= set(rosters)
    local = rosters["local"]
    assert len(local.candidates) >= 2 and all(c.base.source.startswith("wheel-gguf:") for c in local.candidates)
    assert {c.base.family for c in rosters["tiny"].candidates} >= {"llama", "gpt2"}


def test_valid_roster_parses(tmp_path):
    parsed = roster.load_roster(write(tmp_path, BASE + CAND))
    assert parsed.candidates[0].lora == roster.Lora(r=4, alpha=8, dropout=0.05, targets="attention")


def test_a_candidate_may_override_optional_train_keys_too(tmp_path):
    text = BASE + CAND + "train = { gradient_checkpointing = false, share_prefix = true }\n"
    assert roster.load_roster(write(tmp_path, text)).candidates[0].train == {
        "gradient_checkpointing": False,
        "share_prefix": True,
    }


@pytest.mark.parametrize(
    "text, message",
    [  # every error names the file, the entry and the field it is about
        (BASE.replace('llama"', 'llamaa"'), "{path}: base 'b': family must be one of \"bloom\", "),
        (BASE + BASE + CAND, "{path}: duplicate base name 'b'"),
        (BASE + CAND + CAND, "{path}: duplicate name 'c'"),
        (BASE.replace('source = "tiny:llama"\n', ""), "{path}: base 'b': missing key 'source'"),
        (
            BASE.replace('certainty = "confirmed"', 'certainty = "probably"') + CAND,
            "{path}: base 'b': certainty must be one of",
        ),
        (
            BASE.replace('params = "1.3B"', 'params = "big"') + CAND,
            "{path}: base 'b': params must be a parameter count such as 1.3e9 or '1.3B', got 'big'",
        ),
        (BASE + "resources = { gpu = 1 }\n" + CAND, "{path}: base 'b': [resources] unknown key(s) gpu (known: gpus, "),
        (
            BASE + 'resources = { gpus = 1, gpu_memory_gb = "16" }\n' + CAND,
            "{path}: base 'b': [resources] gpu_memory_gb must be int, got '16'",
        ),
        (BASE + "resources = 16\n" + CAND, "{path}: base 'b': resources must be table, got 16"),
        (BASE + "remote_code = 1\n" + CAND, "{path}: base 'b': remote_code must be bool, got 1"),
        (BASE + CAND.replace("r = 4", "r = 0"), "{path}: candidate 'c': [lora] r must be at least 1, got 0"),
        (BASE + CAND + 'tags = "seed"\n', "{path}: candidate 'c': tags must be list, got 'seed'"),
        (BASE + CAND.replace('name = "c"\n', ""), "{path}: candidate '?': missing key 'name'"),
        (BASE + 'task = "seq2seq"\n' + CAND, "{path}: base 'b': task 'seq2seq' does not match family 'llama'"),
        (BASE + 'licens = "MIT"\n' + CAND, "{path}: base 'b': unknown key(s) licens (known: name, "),
        (BASE + CAND.replace('base = "b"', 'base = "x"'), "{path}: candidate 'c': unknown base 'x'"),
        (BASE + CAND.replace("r = 4", "rank = 4"), "{path}: candidate 'c': [lora] unknown key(s) rank (known: r, "),
        (BASE, "{path}: no [[candidate]] entries"),
        (BASE + CAND + "train = { lr = 1.0 }\n", "{path}: candidate 'c': unknown train override(s) lr"),
        ("name = ", "{path}: not valid TOML"),
    ],
)
def test_invalid_rosters_are_refused_with_the_reason(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(roster.RosterError) as err:
        roster.load_roster(path)
    assert str(err.value).startswith(message.format(path=path))


def test_select_by_roster_and_candidate_name():
    assert [c.name for c in roster.select("tiny")] == [
        "tiny-llama-lora",
        "tiny-gpt2-lora",
        "tiny-t5-lora",
        "tiny-bloom-lora",
        "tiny-llama-qlora",
    ]
    assert [c.name for c in roster.select("tiny-gpt2-lora")] == ["tiny-gpt2-lora"]
    with pytest.raises(roster.RosterError, match="neither a roster"):
        roster.select("gpt-5")


def test_work_items_put_one_baseline_per_base_first():
    items = roster.work_items(roster.select("local"))
    assert [i["kind"] for i in items] == ["baseline", "candidate", "candidate"]
    assert items[0]["lora"] is None and items[1]["base"] == items[0]["base"]


def test_profiles_validate_and_override():
    profile = config.load_profile("cpu")
    assert profile.train.max_steps > 0 and profile.policy.primary == "bits_per_byte"
    assert profile.with_max_steps(3).train.max_steps == 3
    assert profile.with_max_steps(0) == profile


def test_bad_profile_is_refused(tmp_path):
    text = (config.profiles_dir() / "cpu.toml").read_text().replace("batch_size = 8", 'batch_size = "8"', 1)
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load_profile(str(path))
    assert str(err.value) == f"{path}: [train] batch_size must be int, got '8'"  # file, table and key
    with pytest.raises(config.ConfigError, match="known profiles"):
        config.load_profile("nope")


def test_a_profile_may_leave_out_share_prefix_and_gets_it_on(tmp_path):
    text = (config.profiles_dir() / "cpu.toml").read_text()
    path = tmp_path / "old.toml"
    path.write_text("\n".join(line for line in text.splitlines() if not line.startswith("share_prefix")))
    assert "share_prefix" not in path.read_text() and config.load_profile(str(path)).train.share_prefix is True
    path.write_text(text.replace("share_prefix = true", "share_prefix = false"))
    assert config.load_profile(str(path)).train.share_prefix is False


def test_seed_roster_declares_the_29_original_models_honestly():
    seed = roster.all_rosters()["seed"]
    assert len(seed.candidates) == 29 and all(c.name.startswith("az-") for c in seed.candidates)
    families = {c.base.family for c in seed.candidates}
    assert families == {"gpt2", "gpt_neo", "gpt_neox", "llama", "mistral", "mpt", "opt", "bloom", "t5", "deci"}
    by_name = {c.name: c for c in seed.candidates}
    # the roster notes: only five ids are confirmed by the adapters themselves
    assert {n for n, c in by_name.items() if c.base.certainty == "confirmed"} == {
        "az-longchat",
        "az-tinyllama",
        "az-openchat",
        "az-vicgalle-gpt2",
        "az-tulu",
    }
    assert by_name["az-flan-t5"].base.task == "seq2seq"
    assert by_name["az-tinyllama"].lora == roster.Lora(r=16, alpha=64, dropout=0.1, targets=("q_proj", "v_proj"))
    assert by_name["az-galpaca"].base.params == 30e9 and by_name["az-galpaca"].base.resources.gpu_memory_gb == 80


def test_remote_code_needs_a_pinned_commit():
    decilm = {c.name: c for c in roster.select("seed")}["az-decilm"].base
    assert "pins no commit" in roster.refusal(decilm)
    from dataclasses import replace

    assert "pins no commit" in roster.refusal(replace(decilm, revision="main"))
    assert roster.refusal(replace(decilm, revision="a" * 40)) is None
    assert "needs remote code" in roster.refusal(replace(decilm, remote_code=False, revision="a" * 40))


def test_refused_items_become_results_before_any_compute():
    items = roster.work_items(roster.select("az-decilm,az-tinyllama"))
    allowed, refused = roster.runnable(items)
    assert [i["name"] for i in allowed] == ["tinyllama-1.1b-alpaca-chat-v1.5", "az-tinyllama"]
    assert [r["item"]["name"] for r in refused] == ["decilm-7b-instruct", "az-decilm"]
    assert refused[0]["error"].startswith("refused: ")
    with pytest.raises(roster.NothingToRun) as refused_whole:
        roster.runnable(roster.work_items(roster.select("az-decilm")))
    message = str(refused_whole.value)  # one line: the models, then their reason once, with its fix
    assert "\n" not in message and message.count("pins no commit") == 1
    assert message.startswith("every selected model was refused — az-decilm, its untuned base decilm-7b-instruct: ")
    assert "set revision =" in message
    assert isinstance(refused_whole.value, MetaflowException)  # Metaflow prints it without a traceback


@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            "family:gpt2",
            {
                "az-gpt2-alpaca",
                "az-vicgalle-gpt2",
                "az-instruct-gpt",
                "az-cerebras",
                "tiny-gpt2-lora",
                *(f"scale-gpt2-{recipe}" for recipe in ("r4", "r8", "r16", "r8-all", "r8-drop")),
            },
        ),
        ("seed+family:gpt2+size:<1B", {"az-gpt2-alpaca", "az-vicgalle-gpt2", "az-instruct-gpt"}),
        ("seed+size:>=13B", {"az-tulu", "az-wizardlm", "az-alpacagpt", "az-galpaca"}),
        ("certainty:inferred", {"az-longchat-base", "az-mpt", "az-opt"}),
        ("tiny+family:gpt2,az-bloom", {"tiny-gpt2-lora", "az-bloom"}),
        ("tag:seed+family:t5", {"az-flan-t5"}),
    ],
)
def test_select_by_tags_filters_and_names(spec, expected):
    assert {c.name for c in roster.select(spec)} == expected


def test_bad_selections_are_clear():
    with pytest.raises(roster.RosterError, match="unknown filter 'colour'"):
        roster.select("colour:red")
    with pytest.raises(roster.RosterError, match="size filter"):
        roster.select("size:2B")
    with pytest.raises(roster.RosterError, match="selected nothing"):
        roster.select("seed+family:bloom+size:>1B")


def test_candidate_names_are_unique_across_rosters(tmp_path, monkeypatch):
    write(tmp_path, BASE + CAND)
    (tmp_path / "other.toml").write_text(BASE + CAND)
    monkeypatch.setenv("BARBAROSSA_ROSTERS", str(tmp_path))
    with pytest.raises(roster.RosterError, match="declared in both"):
        roster.all_rosters()


def test_models_command_lists_every_roster_as_json(capsys):
    import json

    from barbarossa import cli

    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(r["roster"] == "seed" for r in rows) == 29
    assert {"local", "tiny"} <= {r["roster"] for r in rows}
    tulu = next(r for r in rows if r["name"] == "az-tulu")
    assert tulu["base_id"] == "allenai/tulu-13b" and tulu["certainty"] == "confirmed" and tulu["gpu_memory_gb"] == 80
    assert next(r for r in rows if r["name"] == "az-decilm")["refused"]
    assert cli.main(["models", "--models", "family:bloom"]) == 0
    assert "az-bloom" in capsys.readouterr().out


def test_profile_extra_eval_sets_and_metrics_are_validated(tmp_path):
    import pytest

    from barbarossa import config
    from barbarossa.config import PROJECT_ROOT

    base = (PROJECT_ROOT / "configs" / "profiles" / "smoke.toml").read_text()
    assert config.load_profile("smoke").eval.extra_sets == ()

    def profile(extra: str):
        path = tmp_path / "p.toml"
        path.write_text(base.replace("[eval]\n", "[eval]\n" + extra + "\n"))
        return path

    good = config.load_profile(
        str(
            profile(
                'extra_sets = [{ name = "qa", source = "s3://b/qa.jsonl" }]\n'
                'extra_metrics = ["barbarossa/evaluate/metrics/chrf.py"]'
            )
        )
    )
    assert good.eval.extra_sets[0]["name"] == "qa" and good.eval.extra_metrics[0].endswith("metrics/chrf.py")
    for extra, message in [
        ('extra_sets = [{ name = "qa" }]', "extra_sets entry 1"),
        ('extra_sets = [{ name = "a", source = "x" }, { name = "a", source = "y" }]', "distinct"),
        ('extra_metrics = ["no/such/metric.py"]', "not an existing .py metric module"),
    ]:
        with pytest.raises(config.ConfigError, match=message):
            config.load_profile(str(profile(extra)))


def test_profile_benchmarks_and_must_not_lose_are_validated(tmp_path):
    import pytest

    from barbarossa import config
    from barbarossa.config import PROJECT_ROOT

    base = (PROJECT_ROOT / "configs" / "profiles" / "smoke.toml").read_text()
    smoke = config.load_profile("smoke")
    assert smoke.eval.benchmarks == () and smoke.eval.benchmark_rows == 4
    assert smoke.policy.must_not_lose == ()

    def profile(eval_extra: str = "", policy_extra: str = ""):
        path = tmp_path / "p.toml"
        path.write_text(
            base.replace("[eval]\n", "[eval]\n" + eval_extra + "\n").replace(
                "[policy]\n", "[policy]\n" + policy_extra + "\n"
            )
        )
        return path

    good = config.load_profile(
        str(
            profile(
                'benchmarks = [{ name = "arc", source = "s3://b/arc_az.jsonl" }]',
                'must_not_lose = ["belebele.accuracy", "flores.chrf_into"]',
            )
        )
    )
    assert good.eval.benchmarks[0]["name"] == "arc" and good.policy.must_not_lose[1] == "flores.chrf_into"
    with pytest.raises(config.ConfigError, match="benchmarks entry 1 must be"):
        config.load_profile(str(profile('benchmarks = [{ source = "x.jsonl" }]')))
    with pytest.raises(config.ConfigError, match="must_not_lose entry 1 must be '<benchmark>.<metric>'"):
        config.load_profile(str(profile(policy_extra='must_not_lose = ["belebele.f1"]')))
    path = tmp_path / "old.toml"  # a profile from before language packs: its primary az_fidelity is today's fidelity
    path.write_text(base.replace('primary = "bits_per_byte"', 'primary = "az_fidelity"'))
    assert config.load_profile(str(path)).policy.primary == "fidelity"
