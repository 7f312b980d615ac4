"""Build an Azerbaijani instruction dataset: translate English Alpaca-schema rows, check them, version them."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the barbarossa/ library beside flows/

from metaflow import Config, FlowSpec, Parameter, card, current, resources, retry, step

from barbarossa import languages, storage
from barbarossa.config import PROJECT_ROOT
from barbarossa.console import console
from barbarossa.data import instructions
from barbarossa.infra.mutators import ShipLibrary
from barbarossa.translate import translation

DATASET_EVENT = "barbarossa.dataset-updated"


@ShipLibrary
class TranslateFlow(FlowSpec):
    """English → Azerbaijani translation with integrity checks, feeding the fine-tune flow.

        start ──► translate ──► qa ──► join ──► end
                 (foreach shard)

    start      check the backend can work here (AWS region and credentials, or the
               local model folder); read and validate the English rows (file,
               s3:// or HF id); write shards
    translate  protect code / URLs / numbers / placeholders, translate through the
               configured backend (AWS Translate or a local seq2seq model) with a
               content-addressed cache, restore the protected spans
    qa         per-row checks with reasons: damaged spans, empty, length ratio,
               lost line breaks, still English
    join       apply the QA policy (drop or flag), write the versioned dataset
               (JSONL + dataset card) whose URI and fingerprint are artifacts; a
               deployed flow publishes the dataset-updated event the fine-tune flow
               is triggered by
    """

    settings = Config(
        "translate",
        default=str(PROJECT_ROOT / "configs" / "translate" / "aws.toml"),
        parser=translation.parse_settings,
        help="Backend, shard size and QA policy",
    )
    language = Parameter(
        "language",
        default=languages.DEFAULT,
        help="Language pack in configs/languages: the target language and how QA identifies it",
    )
    source = Parameter("source", default="bundled-en", help="English rows: file, s3:// URI, HF id, or 'bundled-en'")
    output_root = Parameter("output-root", default="runs", help="Local folder or s3:// prefix (datasets, cache)")
    publish_event = Parameter(
        "publish-event", type=bool, default=False, help=f"Publish '{DATASET_EVENT}' when done (a deployed flow on Argo)"
    )

    @step
    def start(self):
        self.pack = languages.load(self.language)
        self.backend = translation.backend_spec(self.settings.backend.to_dict(), self.pack)
        translation.check_backend(self.backend)  # a backend unusable here stops now, in one line
        english = instructions.load(self.source)
        root = self.output_root if storage.is_s3(self.output_root) else os.path.abspath(self.output_root)
        self.root = storage.join(root, current.flow_name)
        self.summary = {"source": self.source, "source_fingerprint": english.fingerprint, "rows": len(english.records)}
        self.shards = [
            storage.write_text(
                storage.join(self.root, str(current.run_id), "shards", f"{i:05d}.jsonl"), instructions.to_jsonl(rows)
            )
            for i, rows in enumerate(translation.shards(english.records, self.settings.shard_rows))
        ]
        self.next(self.translate, foreach="shards")

    @resources(gpu=1, cpu=4, memory=16000)
    @retry(times=2)
    @step
    def translate(self):
        backend = translation.make_backend(self.backend)
        cache = translation.Cache(storage.join(self.root, "cache"), backend)
        results = translation.translate_shard(instructions.read_jsonl(self.input), backend, cache)
        self.translated = storage.write_text(
            self.input.replace("/shards/", "/translated/"), instructions.to_jsonl(results)
        )
        self.stats = {
            "rows": len(results),
            "backend_calls": backend.calls,
            "cache_hits": cache.hits,
            "cache_misses": cache.misses,
        }
        self.next(self.qa)

    @step
    def qa(self):
        checked = translation.check_shard(instructions.read_jsonl(self.translated), identify=self.pack["identify"])
        self.checked = storage.write_text(
            self.translated.replace("/translated/", "/checked/"), instructions.to_jsonl(checked)
        )
        self.next(self.join)

    @card(type="blank", id="qa")
    @step
    def join(self, inputs):
        self.merge_artifacts(inputs, include=["summary", "root", "settings", "pack", "backend"])
        results = [r for shard in inputs for r in instructions.read_jsonl(shard.checked)]
        self.stats = {k: sum(shard.stats[k] for shard in inputs) for k in inputs[0].stats}
        kept, self.qa_counts = translation.apply_policy(results, self.settings.qa_policy)
        self.dataset = translation.publish_dataset(
            kept,
            self.summary,
            self.qa_counts,
            {**self.settings.to_dict(), "backend": self.backend, "language": self.pack["code"]},
            self.root,
        )
        current.card["qa"].extend(translation.qa_card(self.qa_counts, results, self.dataset))
        if self.publish_event:
            translation.announce(DATASET_EVENT, self.dataset)
        self.next(self.end)

    @step
    def end(self):
        console.print(
            f"dataset: {self.dataset['uri']} ({self.dataset['rows']} rows, fingerprint "
            f"{self.dataset['fingerprint']}); QA flagged {self.qa_counts['flagged']} of {self.qa_counts['rows']}; "
            f"backend calls {self.stats['backend_calls']}, cache hits {self.stats['cache_hits']}"
        )


if __name__ == "__main__":
    TranslateFlow()
