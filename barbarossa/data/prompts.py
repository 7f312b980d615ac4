"""The one prompt template, used for training, evaluation and exported model cards.

Train/inference prompt mismatch is the most common silent fine-tuning bug, so
every caller renders prompts and builds label masks through this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

IGNORE_INDEX = -100


def pad_rows(rows: list[list[int]], value: int, side: str = "right") -> list[list[int]]:
    """Rows of token ids, labels or mask bits padded with `value` to the longest row."""
    width = max(len(r) for r in rows)
    return [([value] * (width - len(r)) + r) if side == "left" else (r + [value] * (width - len(r))) for r in rows]


def pad_batch(examples: list[dict], pad_id: int, side: str = "right") -> dict:
    """Tensors for a batch padded to its longest example; pad labels are ignored.

    Inputs and labels are padded separately: the same length for a causal LM,
    the decoder side's own length for seq2seq.
    """
    import torch

    ids = [e["input_ids"] for e in examples]
    batch = {
        "input_ids": torch.tensor(pad_rows(ids, pad_id, side)),
        "attention_mask": torch.tensor(pad_rows([[1] * len(r) for r in ids], 0, side)),
    }
    if all("labels" in e for e in examples):
        batch["labels"] = torch.tensor(pad_rows([e["labels"] for e in examples], IGNORE_INDEX, side))
    return batch


SECTION_START = "\n### "  # where a template section starts: an answer ends before the next one


@dataclass(frozen=True)
class Template:
    """An Alpaca-style template in one language: a preamble (another one when there is an input) and three headers.

    Its strings come from the run's language pack (configs/languages/<code>.toml);
    every header starts with '### ', so answers are cut at the next section the same way in every language.
    """

    preamble: str
    preamble_with_input: str
    instruction_header: str
    input_header: str
    response_header: str

    def render(self, instruction: str, input: str = "") -> str:
        """The prompt; it ends where the answer starts."""
        if input:
            return (
                f"{self.preamble_with_input}\n\n{self.instruction_header}\n{instruction}\n\n"
                f"{self.input_header}\n{input}\n\n{self.response_header}\n"
            )
        return f"{self.preamble}\n\n{self.instruction_header}\n{instruction}\n\n{self.response_header}\n"


@cache
def _pack_template(code: str) -> Template:
    from barbarossa import languages

    return Template(**languages.load(code)["template"])


def template_of(language: dict | Template | None = None) -> Template:
    """The template of a language pack (as `languages.load` returns it, or a data summary's `language`);
    None: the default pack's (Azerbaijani), which is also what runs from before language packs used."""
    if isinstance(language, Template):
        return language
    if language is None:
        from barbarossa import languages

        return _pack_template(languages.DEFAULT)
    return Template(**language["template"])


def render_prompt(instruction: str, input: str = "", template: Template | None = None) -> str:
    """The prompt of one record in the run's template (the default pack's when none is given)."""
    return template_of(template).render(instruction, input)


def encode_prompt(tokenizer, record: dict, task: str = "causal", template: Template | None = None) -> list[int]:
    """Token ids of the prompt exactly as generation will see them.

    A decoder-only model continues the prompt, so a trailing EOS (added by some
    tokenizers) is removed; an encoder-decoder's encoder input keeps it.
    """
    text = render_prompt(record["instruction"], record["input"], template)
    return _prompt_ids(tokenizer, tokenizer(text)["input_ids"], task)


def _prompt_ids(tokenizer, ids, task: str) -> list[int]:
    """Prompt ids as the model sees them (one place for the trailing-EOS rule, per row or batched)."""
    ids = list(ids)
    if task == "causal" and ids and tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    return ids


def encode_response(tokenizer, text: str) -> list[int]:
    """Response ids followed by EOS, the token generation stops on."""
    return _response_ids(tokenizer, tokenizer(text, add_special_tokens=False)["input_ids"])


def _response_ids(tokenizer, ids) -> list[int]:
    return list(ids) + [tokenizer.eos_token_id]


def build_example(
    tokenizer,
    record: dict,
    max_length: int,
    min_response_tokens: int = 8,
    task: str = "causal",
    template: Template | None = None,
) -> dict | None:
    """input_ids and labels with the prompt masked: loss is on the response and EOS only.

    Causal LM: one sequence, prompt labels set to IGNORE_INDEX. A response that
    does not fit is cut at max_length (and loses its EOS); an example whose prompt
    leaves fewer than `min_response_tokens` is dropped (None). Seq2seq: the prompt
    is the encoder input and the labels are the decoder side, each up to max_length.
    """
    prompt = encode_prompt(tokenizer, record, task, template)
    response = encode_response(tokenizer, record["output"])
    return _assemble(prompt, response, max_length, min_response_tokens, task)


BATCH_ROWS = 2048  # rows per tokenizer call: per-call overhead is gone by then, and peak memory stays ~1 GB at 50K rows


def build_examples(
    tokenizer,
    records: list[dict],
    max_length: int,
    min_response_tokens: int = 8,
    task: str = "causal",
    template: Template | None = None,
) -> list[dict | None]:
    """`build_example` for every record, with two tokenizer calls per BATCH_ROWS rows instead of two per row.

    The output is identical, row for row (None where a row is dropped); batching
    only removes the per-call overhead of the tokenizer.
    """
    examples, template = [], template_of(template)
    for start in range(0, len(records), BATCH_ROWS):
        chunk = records[start : start + BATCH_ROWS]
        prompt_ids = _batch_ids(tokenizer, [template.render(r["instruction"], r["input"]) for r in chunk])
        response_ids = _batch_ids(tokenizer, [r["output"] for r in chunk], add_special_tokens=False)
        examples += [
            _assemble(
                _prompt_ids(tokenizer, prompt, task),
                _response_ids(tokenizer, response),
                max_length,
                min_response_tokens,
                task,
            )
            for prompt, response in zip(prompt_ids, response_ids)
        ]
    return examples


def _batch_ids(tokenizer, texts: list[str], **options) -> list[list[int]]:
    return tokenizer(texts, return_attention_mask=False, return_token_type_ids=False, **options)["input_ids"]


def _assemble(
    prompt: list[int], response: list[int], max_length: int, min_response_tokens: int, task: str
) -> dict | None:
    """One example from prompt ids and response ids (EOS included): the rule `build_example` documents."""
    if task == "seq2seq":
        if len(prompt) > max_length:
            return None
        return {"input_ids": prompt, "labels": response[:max_length]}
    room = max_length - len(prompt)
    if room < min(min_response_tokens, len(response)):
        return None
    response = response[:room]
    return {
        "input_ids": prompt + response,
        "labels": [IGNORE_INDEX] * len(prompt) + response,
    }


def cut_at_next_section(text: str) -> str:
    """An answer ends where the model starts a new '### ...:' section of the template.

    Short or young fine-tunes often keep writing the template after their answer;
    every model (base and tuned) is cut the same way before it is scored.
    """
    cut = text.find(SECTION_START)
    return (text if cut < 0 else text[:cut]).strip()


def show_masking(tokenizer, example: dict, task: str = "causal") -> str:
    """Decoded example with the masked prompt in «» — what the loss does not see."""
    labels = example["labels"]
    if task == "seq2seq":  # the prompt is the encoder input; every label is the answer
        return f"«{tokenizer.decode(example['input_ids'])}»{tokenizer.decode(labels)}"
    cut = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    masked = tokenizer.decode(example["input_ids"][:cut])
    trained = tokenizer.decode(example["input_ids"][cut:])
    return f"«{masked}»{trained}"


def masking_examples(
    tokenizer,
    records: list[dict],
    max_length: int,
    count: int = 2,
    task: str = "causal",
    template: Template | None = None,
) -> list[str]:
    """The first `count` records that fit, decoded with the masked prompt marked (for the data card)."""
    shown = []
    for record in records:
        example = build_example(tokenizer, record, max_length, task=task, template=template)
        if example:
            shown.append(show_masking(tokenizer, example, task))
        if len(shown) == count:
            break
    return shown
