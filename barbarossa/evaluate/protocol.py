"""One evaluation protocol for every candidate and every untuned base.

Held-out loss/perplexity and bits per byte on response tokens, chrF++, BLEU,
Azerbaijani fidelity and degenerate rate of greedy generations (batched,
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

import contextlib
import math
import time
from functools import lru_cache
from pathlib import Path

from barbarossa import storage
from barbarossa.console import log
from barbarossa.data import instructions, prompts
from barbarossa.evaluate import stats
from barbarossa.models import loading, roster, runtime
from barbarossa.models.scoring import device_of, is_seq2seq, response_nll

METRICS_DIR = Path(__file__).parent / "metrics"


@lru_cache(maxsize=None)
def load_metric(name: str):
    """A local `evaluate` module: a name from barbarossa/evaluate/metrics/, or a path to a user's module file.

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


def score_generations(predictions: list[str], references: list[str]) -> tuple[dict, dict]:
    """(scores, per-row statistics) of greedy answers against references, each from its own metric module.

    The per-row part is what each corpus score sums (sacrebleu's segment
    statistics, 0/1 flags), so a bootstrap can recompute the scores on resamples.
    """
    chrf_result = load_metric("chrf").compute(predictions=predictions, references=references)
    bleu_result = load_metric("bleu").compute(predictions=predictions, references=references)
    fidelity = load_metric("az_fidelity").compute(predictions=predictions)
    degenerate = load_metric("degenerate").compute(predictions=predictions)
    scores = {
        "chrf": round(chrf_result["score"], 3),
        "bleu": round(bleu_result["score"], 3),
        "az_fidelity": round(fidelity["score"], 4),
        "languages": fidelity["languages"],
        "degenerate_rate": round(degenerate["score"], 4),
    }
    per_row = {"chrf": [list(map(int, s)) for s in chrf_result["segments"]],
               "bleu": [list(map(int, s)) for s in bleu_result["segments"]],
               "az": list(fidelity["segments"]), "degenerate": list(degenerate["segments"])}
    return scores, per_row


def generation_metrics(predictions: list[str], references: list[str]) -> dict:
    """Every score of greedy answers against references (without the per-row statistics)."""
    return score_generations(predictions, references)[0]


def fertility(tokenizer, texts: list[str]) -> float:
    """Tokens per whitespace word: how expensive (and how well covered) Azerbaijani is for this tokenizer."""
    words = sum(len(t.split()) for t in texts)
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return tokens / max(words, 1)


def response_loss(model, tokenizer, records: list[dict], max_length: int, batch_size: int,
                  decision: runtime.Runtime | None = None) -> tuple[float, int]:
    """(token-weighted mean cross-entropy over response tokens, tokens scored): the per-token view of response_nll."""
    rows = response_nll(model, tokenizer, records, max_length, batch_size, decision)
    count = sum(rows["tokens"])
    return sum(rows["nll"]) / max(count, 1), count


def generate(model, tokenizer, records: list[dict], max_new_tokens: int, batch_size: int,
             decision: runtime.Runtime | None = None) -> list[str]:
    """Greedy answers, batched with left padding and the KV cache, on the model's device.

    Generation stops at EOS or when the answer starts the template's next
    section ("\n### "), so a model that keeps writing the template does not
    spend the rest of max_new_tokens on it. Prompts are batched in order of
    length (less left padding); answers come back in the order of `records`.
    """
    import torch

    seq2seq = is_seq2seq(model)
    task = "seq2seq" if seq2seq else "causal"
    encoded = [prompts.encode_prompt(tokenizer, r, task) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(encoded[i]))
    answers: dict[int, str] = {}
    device = device_of(model)
    with torch.no_grad(), (runtime.autocast(decision) if decision else contextlib.nullcontext()):
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = prompts.pad_batch([{"input_ids": encoded[i]} for i in chunk], tokenizer.pad_token_id, side="left")
            generated = model.generate(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                stop_strings=[prompts.SECTION_START], tokenizer=tokenizer,
            )
            new = generated if seq2seq else generated[:, batch["input_ids"].shape[1]:]  # seq2seq returns only the answer
            for i, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True)):
                answers[i] = prompts.cut_at_next_section(text)
    return [answers[i] for i in range(len(records))]


def device_batch_size(model, requested: int, tokens_per_row: int, rows: int) -> int:
    """Rows per evaluation batch: the profile's on a CPU; on a GPU as many as a quarter of the free memory holds.

    A row costs its KV cache (2 × layers × hidden × 2 bytes per token) plus
    activations of the same order; capped at the number of rows and 256.
    """
    import torch

    device = device_of(model)
    if device.type != "cuda":
        return requested
    config = model.config
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", 1024)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", 24)
    heads = getattr(config, "num_attention_heads", None) or 1
    kv_width = hidden * (getattr(config, "num_key_value_heads", None) or heads) // heads  # grouped-query attention
    per_row = 2 * layers * kv_width * 2 * tokens_per_row * 3
    free, _ = torch.cuda.mem_get_info(device)
    return max(requested, min(256, rows, int(free * 0.25 // max(per_row, 1))))


def loss_metrics(per_row: dict) -> dict:
    """eval_loss (nats per response token), perplexity and bits_per_byte from the per-row sums.

    None where nothing was scored (no tokens; for bits per byte, no response scored whole).
    """
    found = stats.point(per_row)
    digits = {"eval_loss": 5, "perplexity": 3, "bits_per_byte": 5}
    return {name: round(found[name], places) if math.isfinite(found.get(name, math.nan)) else None
            for name, places in digits.items()}


def _rounded_loss_rows(rows: dict) -> dict:
    """Per-row loss numbers small enough to travel as an artifact (NLL to 1e-4 nats)."""
    return {"nll": [round(v, 4) for v in rows["nll"]], "tokens": rows["tokens"], "bytes": rows["bytes"]}


def _protocol(model, tokenizer, records: list[dict], max_length: int, eval_cfg: dict,
              decision: runtime.Runtime | None = None) -> dict:
    """One eval set under the shared protocol: response loss, greedy answers, their scores, user metrics, per-row numbers."""
    scored = records[: eval_cfg["max_loss_rows"]]
    asked = records[: eval_cfg["generate_rows"]]
    loss_batch = device_batch_size(model, eval_cfg["batch_size"], max_length, len(scored))
    loss_rows = _rounded_loss_rows(response_nll(model, tokenizer, scored, max_length, loss_batch, decision))
    gen_batch = device_batch_size(model, eval_cfg["batch_size"], max_length + eval_cfg["max_new_tokens"], len(asked))
    started = time.time()
    answers = generate(model, tokenizer, asked, eval_cfg["max_new_tokens"], gen_batch, decision)
    seconds = time.time() - started
    references = [r["output"] for r in asked]
    new_tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    scores, generation_rows = score_generations(answers, references)
    return {"loss": loss_metrics(loss_rows), "tokens": sum(loss_rows["tokens"]),
            "bytes": sum(loss_rows["bytes"]), "asked": asked, "answers": answers, "scores": scores,
            "per_row": {**loss_rows, **generation_rows},
            "custom": extra_metric_scores(eval_cfg.get("extra_metrics") or [], answers, references),
            "generation": {"seconds": round(seconds, 2), "answer_tokens": new_tokens,
                           "tokens_per_second": round(new_tokens / max(seconds, 1e-9), 1), "batch_size": gen_batch}}


def _extra_set(model, tokenizer, records: list[dict], max_length: int, eval_cfg: dict, decision) -> tuple[dict, dict]:
    """A user's extra eval set: (the flat scores the leaderboard row keeps for it, its per-row numbers)."""
    run = _protocol(model, tokenizer, records, max_length, eval_cfg, decision)
    scores = {k: v for k, v in run["scores"].items() if k != "languages"}
    flat = {"eval_loss": run["loss"]["eval_loss"], "bits_per_byte": run["loss"]["bits_per_byte"], **scores,
            **run["custom"], "rows": len(records)}
    return flat, run["per_row"]


def load_for_evaluation(item: dict, adapter_uri: str | None, train_cfg: dict):
    """(tokenizer, model, runtime) when no trained model is in memory: decided and loaded as training would."""
    tokenizer, model, decision = loading.load_for_item(item, roster.settings_for(item, train_cfg))
    if adapter_uri:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, storage.local_dir(adapter_uri))
    return tokenizer, model, decision


def evaluate(item: dict, adapter_uri: str | None, data_summary: dict, eval_cfg: dict, trained=None,
             train_cfg: dict | None = None) -> dict:
    """Metrics of a base (adapter_uri None) or of base + its LoRA adapter.

    `trained` (a `training.Trained`) is the model the same task just trained:
    evaluated as it is, on its device and in its dtype, without a reload.
    Otherwise the model is loaded under the same runtime decision training
    would make (`train_cfg`: the profile's [train] table).
    """
    started = time.time()
    base = item["base"]
    if trained is not None:
        tokenizer, model, decision = trained.tokenizer, trained.model, trained.runtime
    else:
        tokenizer, model, decision = load_for_evaluation(item, adapter_uri, train_cfg or _DEFAULT_TRAIN)
    model.eval()
    records = instructions.read_jsonl(data_summary["eval_uri"])
    max_length = min(eval_cfg["max_length"], base.get("max_length", eval_cfg["max_length"]))
    run = _protocol(model, tokenizer, records, max_length, eval_cfg, decision)
    loss, scores, asked = run["loss"], run["scores"], run["asked"]
    shown = {k: "–" if v is None else f"{v:.4f}" for k, v in loss.items()}
    log(f"{item['name']}: held-out loss {shown['eval_loss']} over {run['tokens']} response tokens, "
        f"{shown['bits_per_byte']} bits per byte over {run['bytes']} bytes ({decision.compute} on {decision.device})")
    log(f"{item['name']}: chrF++ {scores['chrf']:.2f}, BLEU {scores['bleu']:.2f}, Azerbaijani {scores['az_fidelity']:.0%}, "
        f"degenerate {scores['degenerate_rate']:.0%} on {len(asked)} greedy generations "
        f"({run['generation']['tokens_per_second']:,.0f} tok/s)")
    samples = [
        {"instruction": r["instruction"], "input": r["input"], "reference": r["output"], "generated": a}
        for r, a in list(zip(asked, run["answers"]))[: eval_cfg["samples"]]
    ]
    extra = {entry["name"]: _extra_set(model, tokenizer, instructions.read_jsonl(entry["uri"]), max_length, eval_cfg, decision)
             for entry in data_summary.get("extra_sets", [])}
    return {
        **loss,
        **scores,
        "fertility": round(fertility(tokenizer, [r["output"] for r in records]), 3),
        "custom": run["custom"],
        "extra_sets": {name: flat for name, (flat, _) in extra.items()},
        # per eval row, for intervals and paired tests (stats.py); the leaderboard keeps them out of its rows
        "per_row": {"heldout": run["per_row"], "extra_sets": {name: rows for name, (_, rows) in extra.items()}},
        "eval_tokens": run["tokens"],
        "eval_bytes": run["bytes"],
        "generated": len(asked),
        "generation": run["generation"],
        "samples": samples,
        "runtime": {**decision.as_dict(), "evaluated_on": str(device_of(model)),
                    "evaluated_dtype": str(_weight_dtype(model)).removeprefix("torch.")},
        "eval_seconds": round(time.time() - started, 1),
    }


def _weight_dtype(model):
    """The dtype of the model's frozen 16/32-bit weights (a 4-bit model's non-quantised ones)."""
    import torch

    floats = [p.dtype for name, p in model.named_parameters() if p.is_floating_point() and "lora_" not in name]
    return max(set(floats), key=floats.count) if floats else torch.float32


# A base evaluated outside a training task (no profile at hand): the runtime's defaults.
_DEFAULT_TRAIN = {"precision": "auto", "quantization": "none", "gradient_checkpointing": False, "max_length": 512,
                  "batch_size": 8}
