"""Grow instruction data in a pack's language: a teacher model writes new tasks from seed tasks (self-instruct)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the barbarossa/ library beside flows/

from metaflow import FlowSpec, Parameter, card, current, retry, step

from barbarossa import languages, llm, storage
from barbarossa.console import console
from barbarossa.data import instructions
from barbarossa.infra.mutators import ShipLibrary
from barbarossa.selfinstruct import procedure, settings
from barbarossa.selfinstruct.filters import Pool


@ShipLibrary
class SelfInstructFlow(FlowSpec):
    """Stanford Alpaca's self-instruct procedure, per language pack, through any OpenAI-compatible teacher.

        start ──► generate ──► sift ──► end
                 (foreach group of requests)

    start     check the profile, the seed tasks (instruction JSONL; the pack's sample by default), the
              language pack and the teacher (reachable, key set, model known); plan the first wave
    generate  ask the teacher for one group of requests (a numbered list of seed tasks to continue), answers
              cached by content, written to a file
    sift      one ordered pass: every generated task kept or rejected by exactly one rule, the similarity
              pool growing as tasks are kept; more waves, one after another, until --target is kept or the
              request budget is spent; the kept rows, the rejected ones, a provenance file and a data card
              written beside --out (the kept file last)
    end       say where it all went
    """

    profile = Parameter(
        "profile", default="default", help="Self-instruct profile in configs/selfinstruct ([selfinstruct], [teacher])"
    )
    teacher = Parameter("teacher", default="", help="Teacher endpoint, e.g. http://127.0.0.1:8080/v1 (overrides)")
    teacher_model = Parameter("teacher-model", default="", help="Teacher model name on that endpoint (overrides)")
    language = Parameter("language", default=languages.DEFAULT, help="Language pack in configs/languages")
    seeds = Parameter("seeds", default="bundled", help="Seed tasks (instruction JSONL, s3://, ...; 'bundled')")
    target = Parameter("target", type=int, default=0, help="Tasks to keep (0: the profile's)")
    budget = Parameter("budget", type=int, default=0, help="Requests at the most (0: the profile's)")
    held_out = Parameter(
        "held-out", default="", help="More prompts a task must not copy: benchmark files, comma-separated"
    )
    out = Parameter("out", default="", help="Output instruction JSONL (file or s3://); default under --output-root")
    output_root = Parameter("output-root", default="runs", help="Local folder or s3:// prefix (responses, output)")

    @step
    def start(self):
        self.knobs, teacher_table = settings.load_profile(self.profile)
        self.knobs = self.knobs.replace(
            **{k: v for k, v in (("target", self.target), ("request_budget", self.budget)) if v}
        )
        overrides = {k: v for k, v in (("endpoint", self.teacher), ("model", self.teacher_model)) if v}
        self.teacher_settings = llm.Teacher.from_table({**teacher_table, **overrides}, f"profile {self.profile!r}")
        self.pack = languages.load(self.language)
        seeds = procedure.load_seeds(self.seeds, self.pack, self.knobs)
        self.held_out_rows = procedure.held_out_rows(self.pack, self.held_out)  # validated before the teacher is asked
        llm.check(self.teacher_settings)
        root = self.output_root if storage.is_s3(self.output_root) else os.path.abspath(self.output_root)
        self.run_root = storage.join(root, current.flow_name, str(current.run_id))
        self.cache_dir = storage.join(root, "cache", "llm")  # a folder or an s3:// prefix: a rerun asks nothing
        self.seeds_uri = storage.write_text(
            storage.join(self.run_root, "seeds.jsonl"), instructions.to_jsonl(seeds.records)
        )
        self.seeds_summary = {"source": seeds.source, "rows": len(seeds.records), "fingerprint": seeds.fingerprint}
        self.destination = self.out or storage.join(self.run_root, f"{self.pack['code']}_selfinstruct.jsonl")
        self.groups = procedure.first_wave(len(seeds.records), self.knobs)
        teacher = self.teacher_settings
        console.print(
            f"self-instruct: {len(seeds.records)} seeds, target {self.knobs.target} tasks, first wave "
            f"{sum(map(len, self.groups))} requests to {teacher.model} at {teacher.endpoint}"
        )
        self.next(self.generate, foreach="groups")

    @retry(times=2)
    @step
    def generate(self):
        client = llm.connect(self.teacher_settings, self.cache_dir)
        seeds = instructions.read_jsonl(self.seeds_uri)
        answers = procedure.ask(client, self.pack, seeds, self.input, self.knobs)
        first = self.input[0].index
        self.responses_uri = storage.write_text(
            storage.join(self.run_root, "responses", f"{first:06d}.jsonl"), instructions.to_jsonl(answers)
        )
        self.next(self.sift)

    @card(type="blank", id="data")
    @step
    def sift(self, inputs):
        self.merge_artifacts(inputs, include=["knobs", "teacher_settings", "pack", "run_root", "cache_dir"])
        self.merge_artifacts(inputs, include=["seeds_uri", "seeds_summary", "held_out_rows", "destination"])
        responses = [r for task in inputs for r in instructions.read_jsonl(task.responses_uri)]
        seeds = instructions.read_jsonl(self.seeds_uri)
        pool = Pool(seeds, self.pack, self.knobs, self.held_out_rows)
        procedure.sift(pool, responses, self.knobs)
        client = llm.connect(self.teacher_settings, self.cache_dir)
        responses = procedure.top_up(
            pool,
            responses,
            lambda requests: procedure.ask(client, self.pack, seeds, requests, self.knobs),
            self.knobs,
            len(seeds),
        )
        run = f"{current.flow_name}/{current.run_id}"
        record = procedure.provenance(self.teacher_settings, self.knobs, self.pack, self.seeds_summary, responses, run)
        self.written = procedure.write_outputs(self.destination, pool, record)
        self.counts, self.usage = pool.counts(), procedure.usage(responses)
        current.card["data"].extend(procedure.card_components(self.written, self.counts, self.usage, pool))
        self.next(self.end)

    @step
    def end(self):
        console.print(
            f"kept {self.written['rows']} tasks → {self.written['out']} (fingerprint {self.written['fingerprint']}); "
            f"rejected {self.written['rejected_rows']} → {self.written['rejected']}; {self.usage['requests']} "
            f"requests ({self.usage['cached']} cached); provenance {self.written['provenance']}"
        )
        console.print(f"train on it: python flows/finetune_flow.py run --train-data {self.written['out']}")


if __name__ == "__main__":
    SelfInstructFlow()
