"""A local transformers model as the teacher (`backend = "transformers"`): no server, the evaluation's decoding.

`model` is a model folder or a roster source (`tiny:llama`, `wheel-gguf:...`, `hf:...`), resolved as the roster's
bases are. Requests that share their generation options are decoded together in batches by
`evaluate/decoding.py` (left padding, the KV cache); temperature 0 decodes greedily, above 0 samples with
`top_p`, seeded once per batch by the batch's `seed`. Chat applies the tokenizer's chat template. Stop strings
end a row's decoding and are cut from its text. With `logprobs=N` a forward pass over prompt and answer gives
the top N log-probabilities at each generated token (causal models; a seq2seq one returns None). The model
runs on the CPU in fp32: a teacher big enough to matter belongs behind a server (vLLM on a GPU, docs/llm.md).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from barbarossa.engine import loading
from barbarossa.engine.scoring import device_of, is_seq2seq
from barbarossa.evaluate import decoding
from barbarossa.llm.client import Client
from barbarossa.llm.responses import Completion
from barbarossa.llm.settings import EndpointError, Teacher
from barbarossa.models.families import FAMILIES

BATCH_ROWS = 8  # prompts decoded together


def model_folder(settings: Teacher) -> Path:
    try:
        return loading.resolve(settings.model)
    except (FileNotFoundError, ValueError) as missing:
        raise EndpointError(f"[teacher] model: {missing}") from None


def check(settings: Teacher) -> None:
    """The model resolves to a local folder (a roster source is converted or fetched here, once)."""
    model_folder(settings)


def family_of(folder: Path) -> str:
    """The family `loading.load_model` applies: the model type's own where known, else a stand-in of its task
    (without a runtime decision only the task, causal or seq2seq, matters)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") in FAMILIES:
        return config["model_type"]
    return "t5" if config.get("is_encoder_decoder") else "llama"


def scored_alternatives(model, tokenizer, prompt: list[int], new: list[int], top: int) -> list[dict[str, float]]:
    """The `top` likeliest tokens and their log-probabilities at each generated position, from one forward pass
    over prompt and answer (the model's own distribution, before temperature or top_p)."""
    import torch

    if not new:
        return []
    ids = torch.tensor([prompt + new], device=device_of(model))
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : len(prompt) + len(new) - 1]
    values, tokens = torch.log_softmax(logits.float(), dim=-1).topk(top, dim=-1)
    return [
        {tokenizer.decode([token]): value for token, value in zip(row_tokens, row_values)}
        for row_tokens, row_values in zip(tokens.tolist(), values.tolist())
    ]


def cut_at_stop(text: str, stop: list[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    ends = [text.find(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text


class LocalClient(Client):
    """The teacher as a transformers model in this process, loaded on the first request."""

    def __init__(self, settings: Teacher, cache_dir=None):
        super().__init__(settings, cache_dir, scope="transformers")
        self._loaded = None

    def loaded(self):
        """(tokenizer, model), loaded once."""
        if self._loaded is None:
            folder = model_folder(self.settings)
            tokenizer = loading.load_tokenizer(folder, padding_side="left")
            self._loaded = tokenizer, loading.load_model(folder, family_of(folder)).eval()
        return self._loaded

    def close(self) -> None:
        self._loaded = None

    def send(self, requests, arrived) -> None:
        groups: dict[str, list[int]] = {}
        for position, request in enumerate(requests):
            shared = {k: v for k, v in request.items() if k not in ("kind", "prompt", "messages")}
            groups.setdefault(json.dumps(shared, sort_keys=True), []).append(position)
        for positions in groups.values():
            for position, completion in zip(positions, self.generate([requests[p] for p in positions])):
                arrived(position, completion)

    def encode(self, tokenizer, request: dict) -> list[int]:
        if request["kind"] != "chat":
            return tokenizer(request["prompt"])["input_ids"]
        if not tokenizer.chat_template:
            raise EndpointError(f"{self.settings.model} has no chat template: ask it with complete(), not chat()")
        text = tokenizer.apply_chat_template(request["messages"], add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, requests: list[dict]) -> list[Completion]:
        """Completions of requests that share their generation options, in order."""
        import torch

        tokenizer, model = self.loaded()
        options = requests[0]
        encoded = [self.encode(tokenizer, request) for request in requests]
        sampling = None
        if options["temperature"] > 0:
            sampling = {"temperature": options["temperature"], "top_p": options["top_p"]}
            if options["seed"] is not None:
                torch.manual_seed(options["seed"])
        new = decoding.generate_tokens(
            model,
            tokenizer,
            encoded,
            options["max_tokens"],
            BATCH_ROWS,
            stop_strings=options["stop"],
            sampling=sampling,
        )
        self.count(requests=len(requests))
        answers = [self.finished(tokenizer, ids, len(prompt), options) for ids, prompt in zip(new, encoded)]
        if options["logprobs"] and not is_seq2seq(model):
            tops = [scored_alternatives(model, tokenizer, p, ids, options["logprobs"]) for p, ids in zip(encoded, new)]
            answers = [dataclasses.replace(a, top_logprobs=top) for a, top in zip(answers, tops)]
        return answers

    @staticmethod
    def finished(tokenizer, ids: list[int], prompt_tokens: int, options: dict) -> Completion:
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        text = cut_at_stop(decoded, options["stop"])
        ended = text != decoded or (bool(ids) and ids[-1] == tokenizer.eos_token_id)
        return Completion(
            text=text,
            finish_reason="length" if not ended and len(ids) >= options["max_tokens"] else "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(ids),
            top_logprobs=None,
        )
