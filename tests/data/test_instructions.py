import hashlib
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import rows, write_jsonl

from barbarossa.data import dedup, instructions, synthetic
from barbarossa.decide import cards

# ---------------------------------------------------------------- formats


def test_reads_jsonl_json_csv_and_parquet_alike(tmp_path):
    sample = rows(5)
    jsonl = write_jsonl(tmp_path / "d.jsonl", sample)
    (tmp_path / "d.json").write_text(json.dumps(sample, ensure_ascii=False), encoding="utf-8")
    with open(tmp_path / "d.csv", "w", encoding="utf-8", newline="") as handle:
        import csv

        writer = csv.DictWriter(handle, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(sample)
    pq.write_table(pa.Table.from_pylist(sample), tmp_path / "d.parquet")
    loaded = [instructions.load(str(tmp_path / f"d.{ext}")).records for ext in ("jsonl", "json", "csv", "parquet")]
    assert all(records == sample for records in loaded)
    assert instructions.load(str(jsonl)).fingerprint == instructions.fingerprint(sample)


def test_text_is_nfc_normalised_and_stripped(tmp_path):
    decomposed = "s\u0327o\u0308z"  # ş and ö written as base letter + combining mark
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": f"  {decomposed} ", "input": "", "output": "ok"}])
    assert instructions.load(str(path)).records[0]["instruction"] == "şöz"


# ---------------------------------------------------------------- bad input: every case names file, line and field


def _error(path) -> str:
    with pytest.raises(instructions.DataError) as err:
        instructions.load(str(path))
    return str(err.value)


def test_malformed_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(rows(1)[0]) + '\n{"instruction": "x",\n', encoding="utf-8")
    assert _error(path).startswith(f"{path}: line 2: malformed JSON")  # no field: the line is no object at all


def test_missing_field(tmp_path):
    bad = rows(3)
    del bad[2]["output"]
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    assert _error(path).startswith(f"{path}: line 3, field 'output': missing field")


def test_non_string_field(tmp_path):
    bad = rows(2)
    bad[1]["input"] = 42
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    assert _error(path).startswith(f"{path}: line 2, field 'input': expected a string, got int")


@pytest.mark.parametrize("field_name", ["instruction", "output"])
def test_empty_instruction_or_output(tmp_path, field_name):
    bad = rows(4)
    bad[3][field_name] = "   "
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    assert _error(path).startswith(f"{path}: line 4, field '{field_name}': empty")


@pytest.mark.parametrize("ext, where", [("json", "item 3"), ("csv", "line 4"), ("parquet", "row 3")])
def test_a_bad_row_in_any_format_names_the_file_the_row_and_the_field(tmp_path, ext, where):
    bad = rows(4)
    bad[2]["output"] = " "
    path = tmp_path / f"bad.{ext}"
    if ext == "json":
        path.write_text(json.dumps(bad, ensure_ascii=False), encoding="utf-8")
    elif ext == "csv":
        import csv

        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["instruction", "input", "output"])
            writer.writeheader()  # line 1: the row with index 2 is on line 4
            writer.writerows(bad)
    else:
        pq.write_table(pa.Table.from_pylist(bad), path)
    assert _error(path).startswith(f"{path}: {where}, field 'output': empty")


def test_bad_utf8_in_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = (json.dumps(rows(1)[0]) + "\n").encode()
    path.write_bytes(good + b'{"instruction": "\xff\xfe", "input": "", "output": "x"}\n')
    assert _error(path).startswith(f"{path}: line 2: not valid UTF-8")  # undecodable: no field can be read


def test_bad_utf8_in_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"instruction,input,output\nsalam,,dunya\nsal\xe9m,,x\n")
    assert _error(path).startswith(f"{path}: line 3: not valid UTF-8")


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.csv", "empty.json", "empty.parquet"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("\n" if not name.endswith("parquet") else "")
    assert _error(path) == f"{path}: the file is empty"


def test_wrong_columns_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("question,context,answer\na,b,c\n", encoding="utf-8")
    assert _error(path).startswith(f"{path}: header: missing column(s) instruction, input, output")


def test_wrong_columns_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"instruction": "a", "output": "b"}]), path)
    assert _error(path).startswith(f"{path}: header: missing column(s) input")


def test_unknown_path_is_a_clear_error(tmp_path):
    assert _error(tmp_path / "nope.jsonl").startswith(f"{tmp_path / 'nope.jsonl'}: no such file")
    assert _error("data/typo.jsonl").startswith(
        "data/typo.jsonl: no such file"
    )  # looks like owner/name, but is a missing file


def test_strict_mode_counts_further_bad_rows(tmp_path):
    bad = rows(5)
    bad[1]["output"] = ""
    bad[3]["instruction"] = None
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    assert _error(path) == (
        f"{path}: line 2, field 'output': empty (and 1 more bad rows). Fix the data or pass --on-bad-rows skip."
    )


def test_skip_mode_drops_and_reports_bad_rows(tmp_path):
    bad = rows(5)
    bad[1]["output"] = ""
    bad[3]["input"] = ["not", "a", "string"]
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    loaded = instructions.load(str(path), on_bad_rows="skip")
    assert loaded.records == [bad[i] for i in (0, 2, 4)]
    assert [str(b) for b in loaded.bad_rows] == [
        f"{path}: line 2, field 'output': empty",
        f"{path}: line 4, field 'input': expected a string, got list",
    ]


def test_exact_duplicates_removed_and_counted(tmp_path):
    sample = rows(3)
    loaded = instructions.load(str(write_jsonl(tmp_path / "d.jsonl", sample + [sample[0], sample[2]])))
    assert loaded.records == sample and loaded.duplicates == 2


# ---------------------------------------------------------------- fingerprint & split


def test_fingerprint_changes_with_content_and_order():
    sample = rows(4)
    assert instructions.fingerprint(sample) == instructions.fingerprint([dict(r) for r in sample])
    assert instructions.fingerprint(sample) != instructions.fingerprint(sample[::-1])
    changed = [dict(r) for r in sample]
    changed[0]["output"] += "!"
    assert instructions.fingerprint(sample) != instructions.fingerprint(changed)


def test_split_is_deterministic_disjoint_and_order_independent():
    sample = rows(400)
    train, held = instructions.split_holdout(sample, 0.1, seed=0)
    assert len(train) + len(held) == 400 and 20 <= len(held) <= 60
    assert not {instructions.prompt_key(r) for r in train} & {instructions.prompt_key(r) for r in held}
    _, held_reversed = instructions.split_holdout(sample[::-1], 0.1, seed=0)
    assert sorted(map(instructions.prompt_key, held)) == sorted(map(instructions.prompt_key, held_reversed))
    _, held_other_seed = instructions.split_holdout(sample, 0.1, seed=1)
    assert held_other_seed != held


def test_prepare_never_trains_on_eval_rows(tmp_path):
    train_path = write_jsonl(tmp_path / "train.jsonl", rows(50))
    eval_path = write_jsonl(tmp_path / "eval.jsonl", rows(10, start=45))  # 5 rows overlap the training file
    summary = instructions.prepare(str(train_path), str(eval_path), str(tmp_path / "out"))
    assert summary["eval_rows"] == 10 and summary["train_rows"] == 45 and summary["eval_overlap_removed"] == 5
    train = instructions.read_jsonl(summary["train_uri"])
    held = instructions.read_jsonl(summary["eval_uri"])
    assert not {instructions.prompt_key(r) for r in train} & {instructions.prompt_key(r) for r in held}
    assert summary["train_fingerprint"] == instructions.fingerprint(train)


def test_prepare_fails_before_writing_anything(tmp_path):
    bad = rows(5)
    bad[2]["output"] = ""
    with pytest.raises(instructions.DataError):
        instructions.prepare(str(write_jsonl(tmp_path / "bad.jsonl", bad)), None, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the bundled sample


def test_bundled_sample_meets_its_description():
    sample = instructions.load(str(instructions.BUNDLED))
    records = sample.records
    assert len(records) >= 300 and sample.duplicates == 0
    assert sum(1 for r in records if r["input"]) >= len(records) / 3
    text = " ".join(r["instruction"] + r["output"] for r in records)
    assert all(letter in text for letter in "əğıöüşç")
    train, held = instructions.split_holdout(records, 0.1, seed=0)
    assert len(held) >= 20 and len(train) >= 270


def test_length_histogram_counts_every_field_of_every_row_into_one_bin():
    records = [
        {"instruction": "bir iki üç", "input": "", "output": " ".join(["söz"] * 400)},
        {"instruction": "bir", "input": "a b c d e f", "output": "x"},
    ]
    bins = {(b["field"], b["words"]): b["rows"] for b in instructions.length_histogram(records)}
    assert bins[("instruction", "0-4")] == 2 and bins[("input", "0-4")] == 1 and bins[("input", "5-9")] == 1
    assert bins[("output", "320+")] == 1 and bins[("output", "0-4")] == 1
    assert sum(bins.values()) == 2 * 3


# ---------------------------------------------------------------- at scale: the same answers as the plain definitions


def _reference_fingerprint(records):
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record[f] for f in instructions.FIELDS], ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def _reference_held_out(record, fraction, seed):
    key = hashlib.sha256((record["instruction"] + "\x00" + record["input"]).encode("utf-8")).hexdigest()
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{key}".encode()).digest()[:8], "big") / 2**64 < fraction


def test_prepare_at_scale_matches_the_plain_definitions(tmp_path):
    generated = synthetic.alpaca_rows(5000, seed=3)
    generated[10]["instruction"] = "  s\u0327ərt " + generated[10]["instruction"]  # stripped, NFC-normalised on load
    source = synthetic.write_jsonl(tmp_path / "train.jsonl", generated + generated[:40])  # 40 exact duplicates
    records = instructions.load(str(source)).records
    assert len(records) == 5000 and records[10]["instruction"].startswith("şərt ")
    summary = instructions.prepare(
        str(source),
        None,
        str(tmp_path / "out"),
        eval_fraction=0.1,
        seed=7,
        extra_sets=[{"name": "sample", "source": "bundled"}],
    )
    held = [r for r in records if _reference_held_out(r, 0.1, 7)]
    train = [r for r in records if not _reference_held_out(r, 0.1, 7)]
    assert (
        instructions.read_jsonl(summary["eval_uri"]) == held and instructions.read_jsonl(summary["train_uri"]) == train
    )
    assert (tmp_path / "out" / "data" / "train.jsonl").read_text(encoding="utf-8") == instructions.to_jsonl(train)
    assert summary["duplicates_removed"] == 40 and summary["eval_overlap_removed"] == 0
    assert summary["train_fingerprint"] == _reference_fingerprint(train)
    assert summary["eval_fingerprint"] == _reference_fingerprint(held)
    assert summary["source_fingerprint"] == _reference_fingerprint(records) == instructions.fingerprint(records)
    [extra] = summary["extra_sets"]
    assert extra["source"] == str(instructions.BUNDLED) and extra["fingerprint"] == _reference_fingerprint(
        instructions.load("bundled").records
    )


def test_prepare_with_an_eval_file_removes_the_overlap_by_prompt(tmp_path):
    generated = synthetic.alpaca_rows(600, seed=4)
    eval_rows = generated[500:] + [dict(generated[0], output="Başqa cavab.")]  # same prompt as a training row
    summary = instructions.prepare(
        str(synthetic.write_jsonl(tmp_path / "train.jsonl", generated[:500])),
        str(synthetic.write_jsonl(tmp_path / "eval.jsonl", eval_rows)),
        str(tmp_path / "out"),
    )
    assert summary["eval_overlap_removed"] == 1 and summary["train_rows"] == 499
    assert instructions.read_jsonl(summary["train_uri"]) == generated[1:500]
    assert summary["eval_fingerprint"] == _reference_fingerprint(eval_rows)


def test_synthetic_rows_are_alpaca_shaped_and_reproducible():
    generated = synthetic.alpaca_rows(2000, seed=1)
    assert generated == synthetic.alpaca_rows(2000, seed=1) != synthetic.alpaca_rows(2000, seed=2)
    assert len({(r["instruction"], r["input"]) for r in generated}) == 2000
    with_input = sum(1 for r in generated if r["input"]) / len(generated)
    assert 0.3 < with_input < 0.5
    lengths = sorted(len(r["output"].split()) for r in generated)
    assert lengths[0] < 10 and lengths[len(lengths) // 2] > 15 and lengths[-1] > 200
    assert all(letter in " ".join(r["output"] for r in generated) for letter in "əğıöüşç")


# ---------------------------------------------------------------- near-duplicate decontamination

EVAL_PROMPTS = [
    {
        "instruction": "Aşağıdakı mətni qısa şəkildə xülasə edin və əsas fikirləri üç bənddə sadalayın.",
        "input": "Bakı Azərbaycanın paytaxtı və ən böyük şəhəridir. Şəhər Xəzər dənizinin sahilində yerləşir və "
        "2 milyondan çox əhalisi var.",
        "output": "Bakı paytaxtdır.",
    },
    {
        "instruction": "İngilis dilindən Azərbaycan dilinə tərcümə edin.",
        "input": "The weather in Baku is windy in autumn, but the sea is still warm.",
        "output": "Bakıda payız küləkli olur.",
    },
    {
        "instruction": "Sağlam qidalanma üçün beş sadə məsləhət verin və hər birini bir cümlə ilə izah edin.",
        "input": "",
        "output": "Tərəvəz yeyin.",
    },
    {
        "instruction": "Gündəlik həyatda suya qənaət etməyin yollarını sadalayın, hər yol üçün bir nümunə göstərin.",
        "input": "",
        "output": "Kranı bağlayın.",
    },
    {"instruction": "Ana haqqında dörd misralıq şeir yazın.", "input": "", "output": "Ana, sən..."},
]


def near_copies() -> list[dict]:
    """Training rows that are near-copies of EVAL_PROMPTS: a number, case, punctuation and word order changed."""
    first, second, third, fourth = EVAL_PROMPTS[:4]
    return [
        dict(first, input=first["input"].replace("2 milyondan", "3 milyondan"), output="Başqa cavab."),
        dict(second, instruction=second["instruction"].upper(), input=second["input"].lower()),
        dict(
            third, instruction="Sağlam qidalanma üçün beş sadə məsləhət verin, və hər birini bir cümlə ilə izah edin!"
        ),
        dict(
            fourth,
            instruction="Gündəlik həyatda suya qənaət etməyin yollarını sadalayın, hər yol üçün bir göstərin nümunə.",
        ),
    ]


def different_prompts() -> list[dict]:
    """Training rows that share a lot with an eval prompt but ask something else: they must stay."""
    first, second = EVAL_PROMPTS[:2]
    return [
        dict(first, input="Naxçıvan qədim tarixi olan bir diyardır. Burada çoxlu qala, türbə və karvansara qalıb."),
        dict(second, input="Reading books every evening helps children learn new words."),
        {"instruction": "Payız haqqında dörd misralıq şeir yazın.", "input": "", "output": "Payız gəldi..."},  # 0.79
        {"instruction": "Sağlam yuxu üçün beş sadə məsləhət verin.", "input": "", "output": "Gec yatmayın."},
    ]


def test_normalisation_ignores_case_punctuation_numbers_and_spacing():
    assert (
        dedup.normalise("  İNGİLİS   dilinə, tərcümə edin!!\n(12-ci cümlə)") == "ingilis dilinə tərcümə edin 0 ci cümlə"
    )
    assert dedup.normalise("Qiymət: 1 250,75 AZN") == dedup.normalise("qiymət 3 999 99 azn") == "qiymət 0 0 0 azn"
    assert dedup.normalise("s\u0327ə") == dedup.normalise("Şə") == "şə"  # NFC either way
    assert (
        dedup.shingles("abc") == {"abc"}
        and dedup.shingles("abcdef") == {"abcde", "bcdef"}
        and dedup.shingles("") == set()
    )


def test_near_copies_of_eval_prompts_leave_training_and_are_counted(tmp_path):
    generated = synthetic.alpaca_rows(360, seed=5)
    train_rows = generated[:300] + near_copies() + different_prompts()
    eval_rows = EVAL_PROMPTS + generated[300:]
    train_path = synthetic.write_jsonl(tmp_path / "train.jsonl", train_rows)
    eval_path = synthetic.write_jsonl(tmp_path / "eval.jsonl", eval_rows)
    summary = instructions.prepare(str(train_path), str(eval_path), str(tmp_path / "out"), near_duplicate_threshold=0.8)
    assert instructions.read_jsonl(summary["train_uri"]) == generated[:300] + different_prompts()
    assert instructions.read_jsonl(summary["eval_uri"]) == eval_rows  # eval rows are never the ones removed
    assert summary["near_duplicates_removed"] == 4 and summary["near_duplicates_by_set"] == {instructions.HELD_OUT: 4}
    assert summary["train_rows"] == 304 and summary["eval_overlap_removed"] == 0
    pairs = summary["near_duplicate_examples"]
    assert len(pairs) == 4 and all(
        p["eval_set"] == instructions.HELD_OUT and 0.8 <= p["similarity"] <= 1 for p in pairs
    )
    reordered = pairs[0]  # the least similar first: the reordered words
    assert reordered["eval_prompt"] == EVAL_PROMPTS[3]["instruction"] and reordered["train_prompt"].endswith(
        "göstərin nümunə."
    )
    assert 0.8 <= reordered["similarity"] < 0.9 and len(json.dumps(summary)) < 4000  # small enough for an artifact
    off = instructions.prepare(str(train_path), str(eval_path), str(tmp_path / "off"), near_duplicate_threshold=0)
    assert off["train_rows"] == 308 and off["near_duplicates_removed"] == 0 and off["near_duplicate_examples"] == []
    card = json.dumps([part.render() for part in cards.data_components(summary, [], [])], ensure_ascii=False)
    assert "near-copy of an eval prompt, Jaccard ≥ 0.8 of 5-character shingles" in card
    assert "Near-copies removed from training (the 4 least similar)" in card and "göstərin nümunə." in card
    assert "near-copy of an eval prompt, check off" in json.dumps(
        [part.render() for part in cards.data_components(off, [], [])]
    )


def test_near_copies_of_extra_eval_sets_leave_training_too(tmp_path):
    generated = synthetic.alpaca_rows(400, seed=6)
    train_path = synthetic.write_jsonl(tmp_path / "train.jsonl", generated + near_copies())
    extra_path = synthetic.write_jsonl(tmp_path / "extra.jsonl", EVAL_PROMPTS)
    summary = instructions.prepare(
        str(train_path),
        None,
        str(tmp_path / "out"),
        near_duplicate_threshold=0.8,
        extra_sets=[{"name": "az-qa", "source": str(extra_path)}],
    )
    assert summary["near_duplicates_by_set"] == {instructions.HELD_OUT: 0, "az-qa": 4}
    train = instructions.read_jsonl(summary["train_uri"])
    assert (
        not any(row in train for row in near_copies())
        and len(train) == summary["train_rows"] == 400 - summary["eval_rows"]
    )
    assert instructions.read_jsonl(summary["extra_sets"][0]["uri"]) == EVAL_PROMPTS
    with pytest.raises(instructions.DataError, match="taken by the main eval set"):
        instructions.prepare(
            str(train_path),
            None,
            str(tmp_path / "x"),
            extra_sets=[{"name": instructions.HELD_OUT, "source": str(extra_path)}],
        )


def test_data_without_near_copies_splits_and_fingerprints_as_before(tmp_path):
    source = synthetic.write_jsonl(tmp_path / "train.jsonl", synthetic.alpaca_rows(3000, seed=8))
    on = instructions.prepare(str(source), None, str(tmp_path / "on"), near_duplicate_threshold=0.8)
    off = instructions.prepare(str(source), None, str(tmp_path / "off"), near_duplicate_threshold=0)
    assert on["near_duplicates_removed"] == 0
    for key in ("train_rows", "eval_rows", "train_fingerprint", "eval_fingerprint", "source_fingerprint"):
        assert on[key] == off[key]
    assert (tmp_path / "on" / "data" / "train.jsonl").read_bytes() == (
        tmp_path / "off" / "data" / "train.jsonl"
    ).read_bytes()


def _reworded(record: dict, rng: random.Random, words: list[str], changes: int) -> dict:
    tokens = dedup.prompt_text(record).split()
    for _ in range(changes):
        tokens[rng.randrange(len(tokens))] = rng.choice(words)
    return {"instruction": " ".join(tokens), "input": "", "output": "x"}


@pytest.mark.parametrize("threshold", [0.8, 0.6, 1.0])
def test_banding_finds_every_pair_the_exact_comparison_finds(threshold):
    """On pairs spread over the whole similarity range, the LSH search equals brute force over all pairs."""
    rng, words = random.Random(threshold), synthetic.vocabulary()
    eval_rows = [r for r in synthetic.alpaca_rows(500, seed=9) if len(dedup.prompt_text(r)) > 60][:150]
    train = [_reworded(r, rng, words, rng.choice([0, 0, 1, 1, 2, 3, 5])) for r in eval_rows]
    train += synthetic.alpaca_rows(150, seed=10)
    shingled = [dedup.shingles(dedup.normalise(dedup.prompt_text(r))) for r in eval_rows]
    expected = {}
    for row, record in enumerate(train):
        mine = dedup.shingles(dedup.normalise(dedup.prompt_text(record)))
        best = max(range(len(eval_rows)), key=lambda e: dedup.jaccard(mine, shingled[e]))
        if dedup.jaccard(mine, shingled[best]) >= threshold:
            expected[row] = best
    found = {m.train: m.eval_row for m in dedup.find(train, {"eval": eval_rows}, threshold)}
    assert found == expected and 20 < len(expected) < 150


@pytest.mark.parametrize("threshold", [0.8, 0.0])
def test_the_index_asked_row_by_row_finds_what_find_finds(threshold):
    """Self-instruct asks about one generated task at a time: `Index.nearest` agrees with the batch `find`."""
    rng, words = random.Random(5), synthetic.vocabulary()
    eval_sets = {"a": synthetic.alpaca_rows(60, seed=3), "b": synthetic.alpaca_rows(60, seed=4)}
    train = [_reworded(r, rng, words, rng.choice([0, 1, 3])) for r in eval_sets["b"][:40] + eval_sets["a"][:40]]
    train += synthetic.alpaca_rows(40, seed=11)
    index = dedup.Index(eval_sets, threshold)
    found = {m.train: (m.eval_set, m.eval_row, m.similarity) for m in dedup.find(train, eval_sets, threshold)}
    asked = {row: index.nearest(record) for row, record in enumerate(train)}
    assert {row: hit for row, hit in asked.items() if hit} == found
    assert len(found) > 20 if threshold else found == {}


def test_threshold_must_be_between_zero_and_one(tmp_path):
    for bad in (-0.1, 1.5, "0.8", True):
        with pytest.raises(ValueError, match="near_duplicate_threshold"):
            dedup.check_threshold(bad)
    assert dedup.find(near_copies(), {"eval": EVAL_PROMPTS}, 0) == []
    identical_when_normalised = {m.train for m in dedup.find(near_copies(), {"eval": EVAL_PROMPTS}, 1.0)}
    assert identical_when_normalised == {0, 1, 2}  # 1.0: only prompts equal after normalisation, not reordered words


def test_several_training_sources_mix_in_order_and_the_mix_is_in_the_summary_fingerprint_and_card(tmp_path):
    translated = synthetic.write_jsonl(tmp_path / "translated.jsonl", rows(30))
    generated = synthetic.write_jsonl(tmp_path / "generated.jsonl", rows(12, start=25))  # 5 rows repeat translated's
    one = instructions.prepare(str(translated), None, str(tmp_path / "one"), eval_fraction=0.2)
    mixed = instructions.prepare(f"{translated}, {generated}", None, str(tmp_path / "mixed"), eval_fraction=0.2)
    assert [(m["source"], m["rows"], m["repeats_dropped"]) for m in mixed["train_mix"]] == [
        (str(translated), 30, 0),
        (str(generated), 7, 5),
    ]
    assert mixed["train_rows"] + mixed["eval_rows"] == 37 and mixed["duplicates_removed"] == 5
    assert mixed["source_fingerprint"] != one["source_fingerprint"] and "train_mix" not in one
    swapped = instructions.prepare(f"{generated},{translated}", None, str(tmp_path / "swapped"), eval_fraction=0.2)
    assert swapped["source_fingerprint"] != mixed["source_fingerprint"]  # the order is part of the mix
    card = json.dumps([part.render() for part in cards.data_components(mixed, [], [])], ensure_ascii=False)
    assert "Mix of training sources" in card and mixed["train_mix"][1]["fingerprint"] in card


def test_a_bad_row_in_any_mixed_source_names_that_file_before_anything_is_written(tmp_path):
    good = synthetic.write_jsonl(tmp_path / "good.jsonl", rows(10))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "Salam", "input": "", "output": ""}) + "\n", encoding="utf-8")
    with pytest.raises(instructions.DataError, match=r"bad.jsonl: line 1, field 'output': empty"):
        instructions.prepare(f"{good},{bad}", None, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
