"""Language packs: every shipped pack loads, the default reproduces the template the tool always used, and a bad
pack is refused naming its file and key."""

import pytest

from barbarossa import languages
from barbarossa.data import prompts

# the prompt exactly as it was rendered before language packs: the az pack must not change a token of it
BEFORE = (
    "Aşağıda bir tapşırığı təsvir edən təlimat və əlavə məlumat verən giriş verilib. Tapşırığı lazımi şəkildə "
    "yerinə yetirən cavab yazın.\n\n### Təlimat:\nx\n\n### Giriş:\ny\n\n### Cavab:\n"
)


def test_the_default_pack_renders_the_template_of_earlier_runs():
    assert languages.DEFAULT == "az"
    assert prompts.render_prompt("x", "y") == BEFORE
    assert prompts.render_prompt("x", "y", languages.load("az")) == BEFORE
    assert prompts.render_prompt("x").startswith("Aşağıda bir tapşırığı təsvir edən təlimat verilib.")


@pytest.mark.parametrize("code, header", [("tr", "### Talimat:"), ("kk", "### Нұсқаулық:"), ("uz", "### Koʻrsatma:")])
def test_each_shipped_pack_has_its_own_headers_and_sample(code, header):
    pack = languages.load(code)
    assert pack["code"] == code and header in prompts.render_prompt("a", "", pack)
    assert languages.resolve(pack["sample"]).exists()
    assert code in languages.known()


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            'response_header = "### Жауап:"',
            'response_header = "Жауап:"',
            r"\[template\] response_header must start with '### '",
        ),
        ('target = "KAZAKH"', 'target = "KLINGON"', r"\[identify\] target 'KLINGON' is not a lingua language"),
        (
            'sample = "data/kk_alpaca_sample.jsonl"',
            'sample = "data/nowhere.jsonl"',
            r"sample names 'data/nowhere.jsonl', which does not exist",
        ),
        (
            'neighbours = ["RUSSIAN", "ENGLISH", "TURKISH", "MONGOLIAN"]',
            "neighbours = 3",
            r"\[identify\] neighbours must be list, got 3",
        ),
        ('aws = "kk"', "aws = 7", r"\[codes\] aws must be str, got 7"),
        ("[words]", "[words]\nlength = 1", r"\[words\] unknown key\(s\) length \(known: pattern\)"),
        ('name = "Kazakh"', 'name = ""', r": name must not be empty"),
        ('script = "Cyrl"', 'script = "Cyrl"\nscripts = ["Cyrl"]', r": unknown key\(s\) scripts \(known: code, "),
        ("[template]", "[templates]", r": unknown key\(s\) templates \(known: code, "),
        ('{ name = "flores", source', '{ name = "belebele", source', r"\[benchmarks\] sets names must be distinct"),
        (
            'method = "lingua"',
            'method = "guess"',
            r"\[identify\] method must be one of \"lingua\", \"ngram\", got 'guess'",
        ),
    ],
)
def test_a_bad_pack_is_refused_naming_file_and_key(tmp_path, old, new, message):
    path = tmp_path / "xx.toml"
    text = (languages.languages_dir() / "kk.toml").read_text(encoding="utf-8").replace('code = "kk"', 'code = "xx"')
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(languages.LanguageError, match=message) as err:
        languages.load(str(path))
    assert str(path) in str(err.value)


def test_an_unknown_language_lists_the_known_ones():
    with pytest.raises(languages.LanguageError, match="language 'xx' not found .*known languages: az, kk, tr, uz"):
        languages.load("xx")


def test_the_lingua_names_a_pack_is_checked_against_are_the_installed_linguas():
    from lingua import Language

    assert {known.name for known in Language.all()} == languages.LINGUA_NAMES
