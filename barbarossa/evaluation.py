"""One evaluation protocol for every candidate and every untuned base.

Held-out loss/perplexity on response tokens, chrF++ of greedy generations
(batched, left-padded, KV cache), and a few samples kept for review. Same
prompts, same decoding settings, same metric code for every row of the board.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from pathlib import Path

from barbarossa import data, models, prompts, storage
from barbarossa.console import log
from barbarossa.training import pad_batch

METRICS_DIR = Path(__file__).parent / "metrics"


@lru_cache(maxsize=None)
def load_metric(name: str):
    """A local `evaluate` module: a name from barbarossa/metrics, or a path to a user's module file.

    (Hub metric scripts are unreachable offline, and a path pins exactly what is computed.)
    """
    import evaluate

    return evaluate.load(name if name.endswith(".py") else str(METRICS_DIR / f"{name}.py"))


def extra_metric_scores(modules: list[str], predictions: list[str], references: list[str]) -> dict:
    """Scores of user metric modules, keyed '<module>' (one number) or '<module>.<key>' (several)."""
    scores = {}
    for module in modules:
        stem = Path(module).stem
        result = load_metric(module).compute(predictions=predictions, references=references)
        numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not numbers:
            raise ValueError(f"metric module {module}: compute() returned no numbers ({result!r})")
        scores.update({stem: round(float(v), 5)} if len(numbers) == 1 else
                      {f"{stem}.{k}": round(float(v), 5) for k, v in numbers.items()})
    return scores


def chrf(predictions: list[str], references: list[str]) -> float:
    return load_metric("chrf").compute(predictions=predictions, references=references)["score"]


def generation_metrics(predictions: list[str], references: list[str]) -> dict:
    """Every score of greedy answers against references, each from its own metric module."""
    fidelity = load_metric("az_fidelity").compute(predictions=predictions)
    return {
        "chrf": round(chrf(predictions, references), 3),
        "bleu": round(load_metric("bleu").compute(predictions=predictions, references=references)["score"], 3),
        "az_fidelity": round(fidelity["score"], 4),
        "languages": fidelity["languages"],
        "degenerate_rate": round(load_metric("degenerate").compute(predictions=predictions)["score"], 4),
    }


def fertility(tokenizer, texts: list[str]) -> float:
    """Tokens per whitespace word: how expensive (and how well covered) Azerbaijani is for this tokenizer."""
    words = sum(len(t.split()) for t in texts)
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return tokens / max(words, 1)


def _is_seq2seq(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def response_loss(model, tokenizer, records: list[dict], max_length: int, batch_size: int) -> tuple[float, int]:
    """Token-weighted mean cross-entropy over response tokens (prompt masked)."""
    import torch

    task = "seq2seq" if _is_seq2seq(model) else "causal"
    examples = [e for e in (prompts.build_example(tokenizer, r, max_length, task=task) for r in records) if e]
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = pad_batch(examples[start:start + batch_size], tokenizer.pad_token_id)
            if task == "seq2seq":  # logits already line up with the decoder-side labels
                logits = model(**batch).logits.float()
                labels = batch["labels"]
            else:  # position t predicts token t+1
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
                labels = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                ignore_index=prompts.IGNORE_INDEX, reduction="sum",
            )
            total += losses.item()
            count += int((labels != prompts.IGNORE_INDEX).sum())
    return total / max(count, 1), count


def generate(model, tokenizer, records: list[dict], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers, batched with left padding and the KV cache; stops at the model's EOS.

    Prompts are batched in order of length, so a batch pads to a similar length
    instead of the longest prompt of the set (prefill dominates on a CPU);
    answers come back in the order of `records`.
    """
    import torch

    seq2seq = _is_seq2seq(model)
    task = "seq2seq" if seq2seq else "causal"
    encoded = [prompts.encode_prompt(tokenizer, r, task) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(encoded[i]))
    answers: dict[int, str] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = pad_batch([{"input_ids": encoded[i]} for i in chunk], tokenizer.pad_token_id, side="left")
            generated = model.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            )
            new = generated if seq2seq else generated[:, batch["input_ids"].shape[1]:]  # seq2seq returns only the answer
            for i, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True)):
                answers[i] = prompts.cut_at_next_section(text)
    return [answers[i] for i in range(len(records))]


def _protocol(model, tokenizer, records: list[dict], max_length: int, eval_cfg: dict) -> dict:
    """One eval set under the shared protocol: response loss, greedy answers, their scores and user metrics."""
    loss, tokens = response_loss(model, tokenizer, records[: eval_cfg["max_loss_rows"]], max_length, eval_cfg["batch_size"])
    asked = records[: eval_cfg["generate_rows"]]
    answers = generate(model, tokenizer, asked, eval_cfg["max_new_tokens"], eval_cfg["batch_size"])
    references = [r["output"] for r in asked]
    return {"loss": loss, "tokens": tokens, "asked": asked, "answers": answers,
            "scores": generation_metrics(answers, references),
            "custom": extra_metric_scores(eval_cfg.get("extra_metrics") or [], answers, references)}


def _extra_set(model, tokenizer, records: list[dict], max_length: int, eval_cfg: dict) -> dict:
    """A user's extra eval set: the flat scores the leaderboard row keeps for it."""
    run = _protocol(model, tokenizer, records, max_length, eval_cfg)
    scores = {k: v for k, v in run["scores"].items() if k != "languages"}
    return {"eval_loss": round(run["loss"], 5), **scores, **run["custom"], "rows": len(records)}


def evaluate(item: dict, adapter_uri: str | None, data_summary: dict, eval_cfg: dict) -> dict:
    """Metrics of a base (adapter_uri None) or of base + its LoRA adapter."""
    started = time.time()
    base = item["base"]
    tokenizer, model = models.load_base(base)
    if adapter_uri:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, storage.local_dir(adapter_uri))
    model.eval()
    records = data.read_jsonl(data_summary["eval_uri"])
    max_length = min(eval_cfg["max_length"], base.get("max_length", eval_cfg["max_length"]))
    run = _protocol(model, tokenizer, records, max_length, eval_cfg)
    loss, scores, asked = run["loss"], run["scores"], run["asked"]
    log(f"{item['name']}: held-out loss {loss:.4f} over {run['tokens']} response tokens")
    log(f"{item['name']}: chrF++ {scores['chrf']:.2f}, BLEU {scores['bleu']:.2f}, Azerbaijani {scores['az_fidelity']:.0%}, "
        f"degenerate {scores['degenerate_rate']:.0%} on {len(asked)} greedy generations")
    samples = [
        {"instruction": r["instruction"], "input": r["input"], "reference": r["output"], "generated": a}
        for r, a in list(zip(asked, run["answers"]))[: eval_cfg["samples"]]
    ]
    extra = {entry["name"]: _extra_set(model, tokenizer, data.read_jsonl(entry["uri"]), max_length, eval_cfg)
             for entry in data_summary.get("extra_sets", [])}
    return {
        "eval_loss": round(loss, 5),
        "perplexity": round(math.exp(min(loss, 50)), 3),
        **scores,
        "fertility": round(fertility(tokenizer, [r["output"] for r in records]), 3),
        "custom": run["custom"],
        "extra_sets": extra,
        "eval_tokens": run["tokens"],
        "generated": len(asked),
        "samples": samples,
        "eval_seconds": round(time.time() - started, 1),
    }
