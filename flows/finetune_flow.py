"""Fine-tune a roster of LLMs on instructions in one language (Azerbaijani by default) and rank them on one
leaderboard."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the barbarossa/ library beside flows/

from metaflow import (
    Config,
    FlowSpec,
    Parameter,
    card,
    catch,
    config_expr,
    current,
    project,
    resources,
    retry,
    schedule,
    step,
)

from barbarossa import config, judge, languages, llm, reporting, storage
from barbarossa.data import benchmark_sets, instructions
from barbarossa.decide import bundles, cards, history, leaderboard
from barbarossa.evaluate import protocol
from barbarossa.infra import compute, leases
from barbarossa.infra.mutators import FollowInfra, ShipLibrary
from barbarossa.judge import of_run
from barbarossa.models import roster
from barbarossa.planning import calibration, plan, preflight
from barbarossa.train import loop

SHARED = ["settings", "data", "plan", "run_root", "refused", "llm_cache"]  # every branch carries to join


@ShipLibrary
@FollowInfra
@project(name="barbarossa")
@schedule(weekly=True)
class FinetuneFlow(FlowSpec):
    """Fine-tune every selected model with LoRA, evaluate each the same way, rank them.

              ┌─► fan_small ──► tune_small ──► gather_small ─┐
        start ┤               (foreach item)                ├─► join ──► release ──► end
              └─► fan_large ──► tune_large ──► gather_large ─┘

    start     validate the profile, the roster selection and the data; carve the
              held-out split; write both splits as files; record the cost plan;
              refuse unpinned remote code, models too big for this
              deployment or for the planned GPU, and bases whose files cannot
              be fetched (all before any model loads); sort the work items
              (untuned bases + LoRA candidates) into size classes
    tune_*    one work item: train its LoRA adapter (nothing to train for an
              untuned base), then held-out loss / perplexity, chrF++, BLEU,
              fidelity to the run's language and loops of greedy answers, and
              the benchmarks (multiple choice, translation), same protocol
              for every item. One step per size class, because @resources is
              per step: the `infra` config's roster selection sizes each
              class's box (see barbarossa/infra/compute.py and docs/cluster.md).
              A failure becomes a failed row, not a failed run.
    join      leaderboard rows with deltas against each base, rank, release
              decision and reasons; a card shows them
    release   bundle each released model (adapter, model card, merged weights
              if --merge, verified); publish with --publish, else a dry run
    end       print the leaderboard
    """

    infra = Config(
        "infra",
        default=str(compute.DEFAULT_INFRA),
        parser=compute.parse_infra,
        help="Where fine-tunes run and the roster selection their boxes are sized for",
    )
    models = Parameter(
        "models",
        default=config_expr("infra.models"),
        help="Rosters, candidate names and filters (family:llama, size:<2B, ...); see README",
    )
    profile = Parameter("profile", default="cpu", help="Training/eval profile in configs/profiles (or a .toml path)")
    language = Parameter(
        "language",
        default=languages.DEFAULT,
        help="Language pack in configs/languages (template, fidelity, bundled data, benchmarks)",
    )
    extra_eval = Parameter(
        "extra-eval",
        default="",
        help="Benchmark files to score too, comma-separated (Belebele / {question,choices,answer} "
        "/ {source,target} JSONL, ENG+OTHER aligned files, or a FLORES folder)",
    )
    train_data = Parameter(
        "train-data",
        default="bundled",
        help="Training data: file, s3:// URI, HF dataset id, or 'bundled' (the shipped sample); several, "
        "comma-separated, are mixed in order (e.g. 'bundled,generated.jsonl': translated + self-instruct rows)",
    )
    eval_data = Parameter(
        "eval-data", default="", help="Eval data (file, s3://, HF id); default: held out from --train-data"
    )
    max_steps = Parameter("max-steps", type=int, default=0, help="Optimizer steps per candidate (0: the profile's)")
    on_bad_rows = Parameter(
        "on-bad-rows", default="fail", help="fail: stop on the first bad row; skip: drop and report"
    )
    gpu = Parameter("gpu", default="A100-80GB", help="GPU the recorded cost plan is estimated for")
    output_root = Parameter(
        "output-root",
        default=config_expr("infra.output_root"),
        help="Local folder or s3:// prefix for data splits and adapters (remote compute: s3://)",
    )
    release_to = Parameter(
        "release-to", default="", help="Where released models go: a folder, an s3:// prefix or hf:<owner>"
    )
    publish = Parameter("publish", type=bool, default=False, help="Really publish to --release-to (default: dry run)")
    merge = Parameter(
        "merge", type=bool, default=False, help="Also ship merged weights (verified against base + adapter)"
    )
    judge_url = Parameter("judge", default="", help="Judge endpoint (OpenAI-compatible, …/v1): pairwise win rates")
    judge_model = Parameter("judge-model", default="", help="The judge's model name on that endpoint")

    @card(type="blank", id="data")
    @step
    def start(self):
        compute.check_output_root(self.infra, self.output_root)
        profile = config.load_profile(self.profile).with_max_steps(self.max_steps)
        self.settings = profile.with_judge(self.judge_url, self.judge_model)
        bundles.check_target(self.release_to, self.publish)
        pack = languages.load(self.language)
        if self.settings.judge.enabled:  # an unreachable judge stops the run now, not after the fine-tunes
            llm.check(judge.teacher(self.settings.judge))
        bench = benchmark_sets.load_all(
            benchmark_sets.entries_for(pack, self.settings.eval.benchmarks, self.extra_eval),
            pack,
            self.settings.eval.benchmark_rows,
        )  # validated before anything is written
        selected = roster.select(self.models)
        self.plan = plan.build(selected, self.settings, self.gpu, calibration.measured())
        items = roster.work_items(selected, self.settings)  # each with its resolved settings, used from here on
        allowed, self.refused, tokenizers = preflight.check(items, self.plan)
        self.classes, too_big = compute.assign(allowed, self.infra, compute.deployed_boxes(self.infra))
        self.refused += too_big
        root = self.output_root if storage.is_s3(self.output_root) else os.path.abspath(self.output_root)
        self.run_root = storage.join(root, current.flow_name, str(current.run_id))
        self.llm_cache = storage.join(root, "cache", "llm")  # judge verdicts, by content: a rerun pays nothing
        self.data = instructions.prepare(
            self.train_data,
            self.eval_data or None,
            self.run_root,
            on_bad_rows=self.on_bad_rows,
            eval_fraction=self.settings.eval.eval_fraction,
            seed=self.settings.eval.split_seed,
            extra_sets=list(self.settings.eval.extra_sets),
            near_duplicate_threshold=self.settings.eval.near_duplicate_threshold,
            dev_rows=self.settings.early_stopping.dev_rows,
            language=pack,
        )
        self.data["benchmarks"] = benchmark_sets.write_all(bench, self.run_root)
        # tokenised once per tokenizer, here, under the output root (shared by later runs on the same data)
        self.data = loop.warm_token_cache(allowed, self.data, storage.join(root, "cache"), tokenizers)
        reporting.print_data_summary(self.data)
        reporting.print_plan(self.plan, self.settings.name)
        train_rows = instructions.read_jsonl(self.data["train_uri"])
        current.card["data"].extend(
            cards.data_components(
                self.data,
                instructions.length_histogram(train_rows),
                loop.masking_preview(allowed[0], train_rows, tokenizers[allowed[0]["base"]["name"]], template=pack),
            )
        )
        self.next(self.fan_small, self.fan_large)

    @step
    def fan_small(self):
        self.items = self.classes["small"]
        self.next(self.tune_small, foreach="items")

    @step
    def fan_large(self):
        self.items = self.classes["large"]
        self.next(self.tune_large, foreach="items")

    # @resources / @timeout below are replaced per deployment by FollowInfra.
    @resources(gpu=1)
    @retry(times=1)
    @catch(var="failure")
    @card(type="blank", id="training", refresh_interval=5)
    @step
    def tune_small(self):
        self.tune()
        self.next(self.gather_small)

    @resources(gpu=1)
    @retry(times=1)
    @catch(var="failure")
    @card(type="blank", id="training", refresh_interval=5)
    @step
    def tune_large(self):
        self.tune()
        self.next(self.gather_large)

    def tune(self):
        """Train (candidates only), then evaluate, one work item; both size classes run this."""
        self.item, self.stage, self.train, self.metrics = self.input, "finetune", None, None
        if self.item["kind"] == "idle":
            return
        with leases.for_task(self.item, self.plan, self.infra) as lease:
            self.train_and_evaluate()  # locally: on the leased GPU (CUDA_VISIBLE_DEVICES), within the lease's memory
            if lease:
                self.metrics.setdefault("runtime", {})["gpu_lease"] = lease.as_dict()

    def train_and_evaluate(self):
        trained = None
        if self.item["kind"] == "candidate":
            out = storage.join(self.run_root, self.item["name"])
            settings = self.item["settings"]
            live = cards.LiveTraining(current.card["training"], self.item["name"], settings.train.max_steps)
            trained = loop.train(self.item, self.data, settings, out, on_log=live.update)
            self.train = trained.result
        self.stage = "evaluate"  # the model just trained, on its device and in its dtype: no reload
        adapter = self.train["adapter_uri"] if self.train else None
        answers = storage.join(self.run_root, self.item["name"], "answers.jsonl")  # what a judge reads
        self.metrics = protocol.evaluate(self.item, adapter, self.data, self.item["settings"], trained, answers)

    @step
    def gather_small(self, inputs):
        self.results = leaderboard.gather(inputs)
        self.merge_artifacts(inputs, include=SHARED)
        self.next(self.join)

    @step
    def gather_large(self, inputs):
        self.results = leaderboard.gather(inputs)
        self.merge_artifacts(inputs, include=SHARED)
        self.next(self.join)

    @card(type="blank", id="leaderboard")
    @step
    def join(self, inputs):
        results = [result for branch in inputs for result in branch.results]
        self.merge_artifacts(inputs, include=SHARED)
        names = {r["item"]["name"] for r in results if r["item"]["kind"] == "candidate"}
        last = history.last_releases(current.flow_name, current.run_id, names, f"project_branch:{current.branch_name}")
        per_row_uris = history.save_per_row(results, self.run_root)
        fingerprint, primary = self.data["eval_fingerprint"], self.settings.policy.primary
        pack = languages.of_run(self.data)
        judged = of_run.judge_run(results, self.settings.judge, pack, primary, last, fingerprint, self.llm_cache)
        self.leaderboard = leaderboard.build(
            results + self.refused, self.settings.policy, last, fingerprint, per_row_uris, judged
        )
        self.loss_curves = leaderboard.loss_curves(results)
        self.samples = leaderboard.samples(results)
        self.to_release = bundles.selected(self.leaderboard, results)
        current.card["leaderboard"].extend(
            cards.leaderboard_components(
                self.leaderboard, self.loss_curves, self.data, self.samples, primary=self.settings.policy.primary
            )
        )
        self.next(self.release)

    @resources(gpu=1)  # replaced by FollowInfra: the largest box of the deployment's roster selection
    @step
    def release(self):
        self.released = bundles.release_all(
            self.to_release,
            self.data,
            current.pathspec,
            self.run_root,
            self.merge,
            self.release_to,
            self.publish,
        )
        reporting.print_release(self.released)
        self.next(self.end)

    @step
    def end(self):
        reporting.print_leaderboard(self.leaderboard, self.settings.policy.primary)


if __name__ == "__main__":
    FinetuneFlow()
