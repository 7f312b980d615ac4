"""Translation backends, cache and QA: AWS Translate against recorded responses, a counting local backend."""

from pathlib import Path

import pytest
from botocore.stub import Stubber

from barbarossa.translate import translation


def aws(sleeps):
    import boto3

    client = boto3.client("translate", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return translation.AwsTranslate(client=client, sleep=sleeps.append), client


def test_aws_backend_retries_throttling_with_back_off():
    sleeps = []
    backend, client = aws(sleeps)
    with Stubber(client) as stub:
        request = {"Text": "Hello", "SourceLanguageCode": "en", "TargetLanguageCode": "az"}
        stub.add_client_error(
            "translate_text", service_error_code="ThrottlingException", http_status_code=400, expected_params=request
        )
        stub.add_client_error(
            "translate_text",
            service_error_code="TooManyRequestsException",
            http_status_code=429,
            expected_params=request,
        )
        stub.add_response(
            "translate_text",
            {"TranslatedText": "Salam", "SourceLanguageCode": "en", "TargetLanguageCode": "az"},
            expected_params=request,
        )
        assert backend.translate(["Hello"]) == ["Salam"]
        stub.assert_no_pending_responses()
    assert backend.calls == 3 and sleeps == [0.5, 1.0]


def test_aws_backend_does_not_retry_other_errors():
    backend, client = aws([])
    with Stubber(client) as stub:
        stub.add_client_error(
            "translate_text", service_error_code="UnsupportedLanguagePairException", http_status_code=400
        )
        with pytest.raises(Exception, match="UnsupportedLanguagePairException"):
            backend.translate(["Hello"])
    assert backend.calls == 1


def test_long_texts_are_split_on_paragraphs_under_the_request_limit():
    text = "\n\n".join(["ə" * 3000] * 5)  # 6000 bytes per paragraph
    pieces = translation.split_for_limit(text, 10_000)
    assert len(pieces) == 5 and all(len(p.encode()) <= 10_000 for p in pieces)
    assert "\n\n".join(pieces) == text
    assert translation.split_for_limit("short\n\ntext", 10_000) == ["short\n\ntext"]


class Echo:
    """A backend that 'translates' by tagging the text, and counts what it was asked."""

    name, model, source, target = "echo", "echo-1", "en", "az"

    def __init__(self):
        self.calls, self.texts = 0, []

    def translate(self, texts):
        self.calls += 1
        self.texts += texts
        return [f"AZ {t}" for t in texts]


def test_cache_is_content_addressed_and_shared_across_runs(tmp_path):
    rows = [
        {"instruction": "Say hello.", "input": "", "output": "Hello there, visit https://example.com today."},
        {"instruction": "Say hello.", "input": "12", "output": "```\nprint(1)\n```"},
    ]
    first = Echo()
    results = translation.translate_shard(rows, first, translation.Cache(str(tmp_path), first))
    assert first.texts == [
        "Say hello.",
        "Hello there, visit ⟦0⟧ today.",
    ]  # each distinct text once; code/numbers not sent
    assert results[0]["row"]["output"] == "AZ Hello there, visit https://example.com today."
    assert results[1]["row"] == {"instruction": "AZ Say hello.", "input": "12", "output": "```\nprint(1)\n```"}
    again = Echo()
    cache = translation.Cache(str(tmp_path), again)
    assert translation.translate_shard(rows, again, cache) == results and again.calls == 0 and cache.hits == 2
    other = Echo()
    other.target = "tr"  # another language pair is another cache entry
    translation.translate_shard(rows, other, translation.Cache(str(tmp_path), other))
    assert other.calls == 1


def test_qa_flags_each_problem_with_a_reason():
    source = {"instruction": "List two colours of the flag.", "input": "", "output": "- Blue\n- Red and green"}
    good = {"instruction": "Bayrağın iki rəngini sadalayın.", "input": "", "output": "- Mavi\n- Qırmızı və yaşıl"}
    detector = lambda text: "en" if "the" in text.split() else "az"  # noqa: E731
    assert translation.qa_checks(source, good, {}, detector) == []
    bad = {
        "instruction": "List the two colours of the flag please.",
        "input": "",
        "output": "- Mavi, qırmızı və yaşıl rənglər bayraqda var və çox gözəldir, həqiqətən çox",
    }
    checks = {
        f["check"]: f["reason"] for f in translation.qa_checks(source, bad, {"output": ["url 'x' lost"]}, detector)
    }
    assert checks == {  # each reason names the field it is about
        "untranslated": "instruction: still English",
        "protected_span": "output: protected span damaged (url 'x' lost)",
        "length_ratio": "output: length ratio 3.45 outside 0.5–2.5",
        "line_breaks": "output: 1 line breaks became 0",
    }
    empty = translation.qa_checks(source, {**good, "output": " "}, {}, detector)
    assert empty == [{"check": "empty", "reason": "output: empty translation"}]


def test_policy_drops_or_flags_and_counts_per_check():
    results = [
        {"row": {"instruction": "a", "input": "", "output": "b"}, "flags": [], "verbatim": False},
        {
            "row": {"instruction": "c", "input": "", "output": "d"},
            "verbatim": True,
            "flags": [
                {"check": "empty", "reason": "output: empty translation"},
                {"check": "empty", "reason": "input: empty translation"},
            ],
        },
    ]
    kept, counts = translation.apply_policy(results, "drop")
    assert kept == [results[0]["row"]] and counts["flagged"] == 1 and counts["by_check"]["empty"] == 1
    kept, counts = translation.apply_policy(results, "flag")
    assert kept[1]["qa"] == ["output: empty translation", "input: empty translation"] and counts["published"] == 2
    assert counts["verbatim"] == 1 and counts["unusable"] == 0
    results[1]["row"]["output"] = ""
    kept, counts = translation.apply_policy(results, "flag")
    assert kept == [results[0]["row"]] and counts["unusable"] == 1  # an empty output is never published


def test_the_language_pack_names_the_backends_target_unless_the_config_does():
    from barbarossa import languages

    kazakh = languages.load("kk")
    assert translation.backend_spec({"kind": "aws", "source": "en"}, kazakh)["target"] == "kk"
    assert (
        translation.backend_spec({"kind": "local", "folder": "/m", "source": "eng_Latn"}, kazakh)["target"]
        == "kaz_Cyrl"
    )
    assert translation.backend_spec({"kind": "local", "folder": "/m", "target": "kk"}, kazakh)["target"] == "kk"
    assert translation.backend_spec({"kind": "local", "folder": "tiny:t5", "target": ""}, kazakh)["target"] == ""


def test_qa_judges_untranslated_rows_by_the_packs_identifier():
    from barbarossa import languages

    rows = [
        {
            "source": {
                "instruction": "Name the capital of the country.",
                "input": "",
                "output": "Astana is the capital.",
            },
            "row": {
                "instruction": "Name the capital of the country now.",
                "input": "",
                "output": "Астана — Қазақстанның астанасы.",
            },
            "problems": {},
        }
    ]
    [checked] = translation.check_shard(rows, identify=languages.load("kk")["identify"])
    assert [f["check"] for f in checked["flags"]] == ["untranslated"]


def test_a_translated_dataset_is_named_and_described_for_its_language(tmp_path):
    rows = [{"instruction": "Астана туралы жазыңыз.", "input": "", "output": "Астана — елорда."}]
    counts = {"rows": 1, "flagged": 0, "published": 1, "unusable": 0, "verbatim": 0, "by_check": {}}
    summary = {"source": "bundled-en", "source_fingerprint": "f", "rows": 1}
    settings = {"backend": {"kind": "aws", "source": "en", "target": "kk"}, "qa_policy": "flag", "language": "kk"}
    dataset = translation.publish_dataset(rows, summary, counts, settings, str(tmp_path))
    assert dataset["uri"].endswith("/kk_alpaca.jsonl")
    card = Path(dataset["uri"].replace("kk_alpaca.jsonl", "README.md")).read_text(encoding="utf-8")
    assert "- kk\n" in card and "# Kazakh Alpaca-style instructions" in card
