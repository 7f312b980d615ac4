"""One evaluation protocol for every candidate and every untuned base.

Held-out loss/perplexity and bits per byte on response tokens, chrF++, BLEU,
language fidelity (the run's language pack) and degenerate rate of greedy generations (batched,
left-padded, KV cache), and a few samples kept for review. Same prompts, same
decoding settings, same metric code for every row of the board.

Bits per byte is the cross-model number: per-token loss depends on the
tokenizer (a model that spends 4 tokens per word has an easier job per token),
while the NLL of a whole response divided by its UTF-8 bytes does not. Two
choices make it tokenizer-independent:

- Only responses scored whole count (their NLL and their reference's bytes).
  A response cut at max_length was scored on a tokenizer-dependent prefix whose
  byte length is only known by decoding tokens, which is not exact for every
  tokenizer (byte-level BPE can cut inside a character, SentencePiece
  normalises text); such rows keep their per-token loss but add nothing to bits
  per byte.
- The EOS token's loss counts. Every tokenizer ends a response with exactly one
  EOS, so the sum is -log P(response = this text, then stop) whatever the
  segmentation; it is what training optimises and what generation stops on,
  and it keeps eval_loss × tokens = bits_per_byte × ln 2 × bytes when no row is cut.

A tokenizer with an unknown token (<unk>) scores an approximation of the text,
so its bits per byte is only comparable where the references have no unknown
characters.

Per-row numbers (`per_row`, see stats.py) — never texts — travel with the
metrics so the leaderboard can put a bootstrap interval on every metric and
test a candidate against its base on the same rows.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

from barbarossa import languages, metric_registry, storage
from barbarossa.config import Eval, Profile, Train
from barbarossa.console import log
from barbarossa.data import instructions, prompts
from barbarossa.engine import kernels, loading, runtime
from barbarossa.engine.scoring import device_of, response_nll
from barbarossa.evaluate import benchmark_scoring, stats
from barbarossa.evaluate.decoding import device_batch_size, generate, load_metric
from barbarossa.planning import plan


def extra_metric_scores(modules: list[str], predictions: list[str], references: list[str]) -> dict:
    """Scores of user metric modules, keyed '<module>' (one number) or '<module>.<key>' (several)."""
    scores = {}
    for module in modules:
        stem = Path(module).stem
        result = load_metric(module).compute(predictions=predictions, references=references)
        numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not numbers:
            raise ValueError(f"metric module {module}: compute() returned no numbers ({result!r})")
        if len(numbers) == 1:
            (value,) = numbers.values()
            scores[stem] = round(float(value), 5)
        else:
            scores.update({f"{stem}.{k}": round(float(v), 5) for k, v in numbers.items()})
    return scores


def chrf(predictions: list[str], references: list[str]) -> float:
    return load_metric("chrf").compute(predictions=predictions, references=references)["score"]


def score_generations(predictions: list[str], references: list[str], language: dict | None = None) -> tuple[dict, dict]:
    """(scores, per-row statistics) of greedy answers against references, each from its own metric module.

    The per-row part is what each corpus score sums (sacrebleu's segment
    statistics, 0/1 flags), so a bootstrap can recompute the scores on resamples.
    Fidelity is judged as the language pack says (None: the default pack), among the answers long enough to tell
    (None when none is); `undetermined_rate` is the share too short to tell (metrics/fidelity.py).
    """
    language = language or languages.load()
    chrf_result = load_metric("chrf").compute(predictions=predictions, references=references)
    bleu_result = load_metric("bleu").compute(predictions=predictions, references=references)
    fidelity = load_metric("fidelity").compute(
        predictions=predictions, identify=language["identify"], words=language["words"]
    )
    degenerate = load_metric("degenerate").compute(predictions=predictions)
    scores = {
        "chrf": round(chrf_result["score"], 3),
        "bleu": round(bleu_result["score"], 3),
        "fidelity": None if fidelity["score"] is None else round(fidelity["score"], 4),
        "undetermined_rate": round(fidelity["undetermined"], 4),
        "languages": fidelity["languages"],
        "degenerate_rate": round(degenerate["score"], 4),
    }
    per_row = {
        "chrf": [list(map(int, s)) for s in chrf_result["segments"]],
        "bleu": [list(map(int, s)) for s in bleu_result["segments"]],
        "fidelity": list(fidelity["segments"]),
        "undetermined": list(fidelity["undetermined_segments"]),
        "degenerate": list(degenerate["segments"]),
    }
    return scores, per_row


def fertility(tokenizer, texts: list[str], word_pattern: str = r"\S+") -> float:
    """Tokens per word (as the language pack splits words): how expensive (and how well covered) the language is
    for this tokenizer."""
    words = sum(len(re.findall(word_pattern, t)) for t in texts)
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return tokens / max(words, 1)


def response_loss(
    model,
    tokenizer,
    records: list[dict],
    max_length: int,
    batch_size: int,
    decision: runtime.Runtime | None = None,
    template=None,
) -> tuple[float, int]:
    """(token-weighted mean cross-entropy over response tokens, tokens scored): the per-token view of response_nll."""
    rows = response_nll(model, tokenizer, records, max_length, batch_size, decision, template)
    count = sum(rows["tokens"])
    return sum(rows["nll"]) / max(count, 1), count


def loss_metrics(per_row: dict) -> dict:
    """eval_loss (nats per response token), perplexity and bits_per_byte from the per-row sums.

    None where nothing was scored (no tokens; for bits per byte, no response scored whole).
    """
    found = stats.point(per_row)
    digits = {"eval_loss": 5, "perplexity": 3, "bits_per_byte": 5}
    return {
        name: round(found[name], places) if math.isfinite(found.get(name, math.nan)) else None
        for name, places in digits.items()
    }


def _rounded_loss_rows(rows: dict) -> dict:
    """Per-row loss numbers small enough to travel as an artifact (NLL to 1e-4 nats)."""
    return {"nll": [round(v, 4) for v in rows["nll"]], "tokens": rows["tokens"], "bytes": rows["bytes"]}


def _protocol(
    model,
    tokenizer,
    records: list[dict],
    max_length: int,
    eval_cfg: Eval,
    decision: runtime.Runtime | None = None,
    language: dict | None = None,
) -> dict:
    """One eval set under the shared protocol: response loss, greedy answers, their scores, user metrics,
    per-row numbers."""
    template = prompts.template_of(language)
    scored = records[: eval_cfg.max_loss_rows]
    asked = records[: eval_cfg.generate_rows]
    loss_batch = device_batch_size(model, eval_cfg.batch_size, max_length, len(scored))
    loss_rows = _rounded_loss_rows(response_nll(model, tokenizer, scored, max_length, loss_batch, decision, template))
    gen_batch = device_batch_size(model, eval_cfg.batch_size, max_length + eval_cfg.max_new_tokens, len(asked))
    started = time.time()
    answers = generate(model, tokenizer, asked, eval_cfg.max_new_tokens, gen_batch, decision, template)
    seconds = time.time() - started
    references = [r["output"] for r in asked]
    new_tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    scores, generation_rows = score_generations(answers, references, language)
    return {
        "loss": loss_metrics(loss_rows),
        "tokens": sum(loss_rows["tokens"]),
        "bytes": sum(loss_rows["bytes"]),
        "asked": asked,
        "answers": answers,
        "scores": scores,
        "per_row": {**loss_rows, **generation_rows},
        "custom": extra_metric_scores(list(eval_cfg.extra_metrics), answers, references),
        "generation": {
            "seconds": round(seconds, 2),
            "answer_tokens": new_tokens,
            "tokens_per_second": round(new_tokens / max(seconds, 1e-9), 1),
            "batch_size": gen_batch,
        },
    }


def _extra_set(
    model, tokenizer, records: list[dict], max_length: int, eval_cfg: Eval, decision, language: dict | None
) -> tuple[dict, dict]:
    """A user's extra eval set: (the flat scores the leaderboard row keeps for it, its per-row numbers)."""
    run = _protocol(model, tokenizer, records, max_length, eval_cfg, decision, language)
    scores = {k: v for k, v in run["scores"].items() if k != "languages"}
    flat = {
        "eval_loss": run["loss"]["eval_loss"],
        "bits_per_byte": run["loss"]["bits_per_byte"],
        **scores,
        **run["custom"],
        "rows": len(records),
    }
    return flat, run["per_row"]


def load_for_evaluation(item: dict, adapter_uri: str | None, train_cfg: Train):
    """(tokenizer, model, runtime) when no trained model is in memory: decided and loaded as training would
    (`train_cfg`: the item's resolved [train] settings)."""
    tokenizer, model, decision = plan.load_for_item(item, train_cfg)
    if adapter_uri:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, storage.local_dir(adapter_uri))
    return tokenizer, model, decision


def evaluate(
    item: dict,
    adapter_uri: str | None,
    data_summary: dict,
    settings: Profile,
    trained=None,
    answers_uri: str | None = None,
) -> dict:
    """Metrics of a base (adapter_uri None) or of base + its LoRA adapter.

    `settings` are the item's resolved settings (`Profile.for_item`). `trained` (a `loop.Trained`) is the
    model the same task just trained: evaluated as it is, on its device and in its dtype, without a reload.
    Otherwise the model is loaded under the same runtime decision training would make. With `answers_uri`,
    every greedy answer is written there as JSONL beside its prompt and reference (`answers_uri` in the
    metrics): what a judge compares later, and a later run compares with — texts in a file, not an artifact.
    """
    eval_cfg = settings.eval
    started = time.time()
    base = item["base"]
    if trained is not None:
        tokenizer, model, decision = trained.tokenizer, trained.model, trained.runtime
    else:
        tokenizer, model, decision = load_for_evaluation(item, adapter_uri, settings.train)
    model = kernels.for_evaluation(model).eval()  # eager layers; SDPA where training took a packed-row kernel
    records = instructions.read_jsonl(data_summary["eval_uri"])
    language = languages.of_run(data_summary)
    max_length = eval_cfg.max_length
    run = _protocol(model, tokenizer, records, max_length, eval_cfg, decision, language)
    loss, scores, asked = run["loss"], run["scores"], run["asked"]
    shown = {k: "–" if v is None else f"{v:.4f}" for k, v in loss.items()}
    log(
        f"{item['name']}: held-out loss {shown['eval_loss']} over {run['tokens']} response tokens, "
        f"{shown['bits_per_byte']} bits per byte over {run['bytes']} bytes ({decision.compute} on {decision.device})"
    )
    log(
        f"{item['name']}: chrF++ {scores['chrf']:.2f}, BLEU {scores['bleu']:.2f}, "
        f"{language['name']} {metric_registry.format_value('fidelity', scores['fidelity'])} "
        f"({scores['undetermined_rate']:.0%} too short to tell), "
        f"degenerate {scores['degenerate_rate']:.0%} on {len(asked)} greedy generations "
        f"({run['generation']['tokens_per_second']:,.0f} tok/s)"
    )
    answered = [
        {"instruction": r["instruction"], "input": r["input"], "reference": r["output"], "generated": a}
        for r, a in zip(asked, run["answers"])
    ]
    samples = answered[: eval_cfg.samples]
    if answers_uri:
        storage.write_text(answers_uri, instructions.to_jsonl(answered))
    extra = {
        entry["name"]: _extra_set(
            model, tokenizer, instructions.read_jsonl(entry["uri"]), max_length, eval_cfg, decision, language
        )
        for entry in data_summary.get("extra_sets", [])
    }
    bench_scores, bench_rows = benchmark_scoring.score_all(
        model, tokenizer, data_summary.get("benchmarks") or [], language, eval_cfg, base, decision
    )
    benchmark_metrics = {m.key for m in metric_registry.by_group("benchmark")}
    for name, found in bench_scores.items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in found.items() if k in benchmark_metrics)
        log(f"{item['name']}: {name} ({found['items']} items): {shown}")
    return {
        **loss,
        **scores,
        "language": {"code": language["code"], "name": language["name"]},
        "fertility": round(fertility(tokenizer, [r["output"] for r in records], language["words"]), 3),
        "custom": run["custom"],
        "extra_sets": {name: flat for name, (flat, _) in extra.items()},
        "benchmarks": bench_scores,
        # per eval row, for intervals and paired tests (stats.py); the leaderboard keeps them out of its rows
        "per_row": {
            "heldout": run["per_row"],
            "extra_sets": {name: rows for name, (_, rows) in extra.items()},
            "benchmarks": bench_rows,
        },
        "eval_tokens": run["tokens"],
        "eval_bytes": run["bytes"],
        "generated": len(asked),
        "generation": run["generation"],
        "samples": samples,
        "answers_uri": answers_uri,
        "runtime": {
            **decision.as_dict(),
            "evaluated_on": str(device_of(model)),
            "evaluated_dtype": str(_weight_dtype(model)).removeprefix("torch."),
            "evaluated_attention": loading.attention_of(kernels.base_of(model)),
        },
        "eval_seconds": round(time.time() - started, 1),
    }


def _weight_dtype(model):
    """The dtype of the model's frozen 16/32-bit weights (a 4-bit model's non-quantised ones)."""
    import torch

    floats = [p.dtype for name, p in model.named_parameters() if p.is_floating_point() and "lora_" not in name]
    return max(set(floats), key=floats.count) if floats else torch.float32
