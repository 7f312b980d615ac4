"""Benchmark sets in the formats they ship in: read, normalised, and refused with file, line and field."""

import json
from pathlib import Path

import pytest

from barbarossa import languages
from barbarossa.data import benchmark_sets
from barbarossa.data.instructions import DataError

BELEBELE = {
    "link": "x",
    "question_number": 1,
    "flores_passage": "Bakı Xəzərin sahilindədir.",
    "question": "Bakı haradadır?",
    "mc_answer1": "Dağda",
    "mc_answer2": "Xəzərin sahilində",
    "mc_answer3": "Səhrada",
    "mc_answer4": "Adada",
    "correct_answer_num": "2",
    "dialect": "azj_Latn",
    "ds": "2023-05-03",
}


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_belebele_rows_become_choice_items_with_a_zero_based_answer(tmp_path):
    found = benchmark_sets.read(
        "belebele",
        jsonl(tmp_path / "azj_Latn.jsonl", [BELEBELE, {**BELEBELE, "correct_answer_num": 4}]),
        languages.load("az"),
    )
    assert found["kind"] == "choice" and [i["answer"] for i in found["items"]] == [1, 3]
    assert found["items"][0] == {
        "question": "Bakı haradadır?",
        "context": "Bakı Xəzərin sahilindədir.",
        "choices": ["Dağda", "Xəzərin sahilində", "Səhrada", "Adada"],
        "answer": 1,
    }


def test_generic_choice_and_translation_jsonl(tmp_path):
    choice = benchmark_sets.read(
        "mc", jsonl(tmp_path / "mc.jsonl", [{"question": "2+2?", "choices": ["3", "4"], "answer": 1}]), {}
    )
    assert choice["kind"] == "choice" and choice["items"][0]["context"] == "" and choice["items"][0]["answer"] == 1
    pairs = benchmark_sets.read("tr", jsonl(tmp_path / "tr.jsonl", [{"source": "Hello.", "target": "Salam."}]), {})
    assert pairs["kind"] == "translation" and pairs["items"] == [{"source": "Hello.", "target": "Salam."}]


def test_aligned_files_and_a_flores_folder_give_the_same_pairs(tmp_path):
    (tmp_path / "eng_Latn.dev").write_text("One.\nTwo.\n", encoding="utf-8")
    (tmp_path / "kaz_Cyrl.dev").write_text("Бір.\nЕкі.\n", encoding="utf-8")
    aligned = benchmark_sets.read("f", f"{tmp_path}/eng_Latn.dev+{tmp_path}/kaz_Cyrl.dev", {})
    folder = benchmark_sets.read("f", str(tmp_path), languages.load("kk"))
    assert (
        aligned["items"]
        == folder["items"]
        == [{"source": "One.", "target": "Бір."}, {"source": "Two.", "target": "Екі."}]
    )
    assert aligned["fingerprint"] == folder["fingerprint"]
    with pytest.raises(DataError, match="no eng_Latn.<split> beside a azj_Latn.<split>"):
        benchmark_sets.read("f", str(tmp_path), languages.load("az"))


@pytest.mark.parametrize(
    "row, message",
    [
        ({**BELEBELE, "correct_answer_num": "5"}, "line 2, field 'correct_answer_num': must be 1–4"),
        ({**BELEBELE, "mc_answer3": ""}, "line 2, field 'mc_answer3': must be a non-empty string"),
    ],
)
def test_a_bad_belebele_row_is_refused_with_its_line_and_field(tmp_path, row, message):
    path = jsonl(tmp_path / "b.jsonl", [BELEBELE, row])
    with pytest.raises(DataError, match=f"{path}: {message}"):
        benchmark_sets.read("b", path, {})


def test_bad_generic_rows_aligned_files_and_unknown_formats_are_refused(tmp_path):
    path = jsonl(tmp_path / "mc.jsonl", [{"question": "Q?", "choices": ["a", "b"], "answer": 2}])
    with pytest.raises(DataError, match="line 1, field 'answer': must be the index of the right choice \\(0–1\\)"):
        benchmark_sets.read("mc", path, {})
    path = jsonl(tmp_path / "other.jsonl", [{"text": "hi"}])
    with pytest.raises(DataError, match="not a benchmark format"):
        benchmark_sets.read("x", path, {})
    (tmp_path / "a.dev").write_text("One.\nTwo.\n")
    (tmp_path / "b.dev").write_text("Bir.\n")
    with pytest.raises(DataError, match="has 2 lines but .*b.dev has 1"):
        benchmark_sets.read("f", f"{tmp_path}/a.dev+{tmp_path}/b.dev", {})


def test_a_run_scores_the_packs_sets_then_the_profiles_then_extra_files_with_unique_names(tmp_path):
    pack = languages.load("kk")
    extra = jsonl(tmp_path / "belebele.jsonl", [BELEBELE])
    entries = benchmark_sets.entries_for(pack, [{"name": "arc", "source": extra}], f"{extra}, {extra}")
    assert [e["name"] for e in entries] == ["belebele", "flores", "arc", "belebele-2", "belebele-3"]
    assert entries[0]["source"] == str(languages.resolve("data/benchmarks/belebele/kaz_Cyrl.jsonl"))
    with pytest.raises(DataError, match="given twice: flores"):
        benchmark_sets.entries_for(pack, [{"name": "flores", "source": extra}])


def test_the_bundled_samples_of_every_pack_read(tmp_path):
    for code in languages.known():
        pack = languages.load(code)
        sets = benchmark_sets.load_all(benchmark_sets.entries_for(pack, []), pack)
        assert {s["name"]: s["kind"] for s in sets} == {"belebele": "choice", "flores": "translation"}
        assert all(len(s["items"]) >= 12 for s in sets)
        written = benchmark_sets.write_all(sets, str(tmp_path / code))
        assert benchmark_sets.read_items(written[0]["uri"]) == sets[0]["items"]


class FakeDatasetHub:
    """A dataset repo served from a folder: what `benchmarks.fetch` asks of the Hugging Face Hub."""

    def __init__(self, folder, commits):
        self.folder, self.commits, self.asked = folder, commits, []

    def commit(self, repo, revision):
        return self.commits[revision]

    def download(self, repo, commit, path):
        self.asked.append((repo, commit, path))
        return self.folder / path


def test_fetch_mirrors_a_benchmark_file_at_its_pinned_revision_with_a_manifest(tmp_path):
    (tmp_path / "hub" / "data").mkdir(parents=True)
    (tmp_path / "hub" / "data" / "azj_Latn.jsonl").write_text(json.dumps(BELEBELE) + "\n", encoding="utf-8")
    hub = FakeDatasetHub(tmp_path / "hub", {"v1": "a" * 40})
    where = benchmark_sets.fetch("hf:facebook/belebele@v1:data/azj_Latn.jsonl", str(tmp_path / "mirror"), hub)
    assert where == str(tmp_path / "mirror" / "benchmarks" / "facebook--belebele@v1" / "data" / "azj_Latn.jsonl")
    assert hub.asked == [("facebook/belebele", "a" * 40, "data/azj_Latn.jsonl")]  # downloaded at the resolved commit
    manifest = json.loads(Path(where + benchmark_sets.MANIFEST_SUFFIX).read_text())
    assert manifest["commit"] == "a" * 40 and manifest["size"] == len(Path(where).read_bytes())
    assert benchmark_sets.read("belebele", where, {})["items"][0]["answer"] == 1  # the mirror reads as a benchmark
    with pytest.raises(DataError, match="pin a revision"):
        benchmark_sets.fetch("hf:facebook/belebele:data/azj_Latn.jsonl", str(tmp_path), hub)
    with pytest.raises(DataError, match="hf:<owner>/<dataset>@<revision>:<file in the repo>"):
        benchmark_sets.fetch("facebook/belebele", str(tmp_path), hub)
