"""Fine-tune a roster of LLMs on Azerbaijani instructions and rank them on one leaderboard."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the barbarossa/ library beside flows/

from metaflow import FlowSpec, Parameter, card, catch, current, resources, retry, step  # noqa: E402

from barbarossa import cards, cli, config, data, evaluation, leaderboard, plan, registry, storage, training  # noqa: E402


class FinetuneFlow(FlowSpec):
    """Fine-tune every selected model with LoRA, evaluate each the same way, rank them.

        start ──► finetune ──► evaluate ──► join ──► end
                 (foreach model: untuned bases + LoRA candidates)

    start     validate the profile, the roster selection and the data; carve the
              held-out split; write both splits as files; record the cost plan;
              refuse unpinned remote code (all before any model loads)
    finetune  train one LoRA adapter (nothing to train for an untuned base);
              GPU on a cluster, CPU locally; a failure becomes a failed row
    evaluate  held-out loss / perplexity and chrF++ of greedy answers, same
              protocol for bases and candidates
    join      leaderboard rows with deltas against each base, rank, release
              decision and reasons; a card shows them
    end       print the leaderboard
    """

    models = Parameter("models", default="local", help="Rosters, candidate names and filters (family:llama, size:<2B, ...); see README")
    profile = Parameter("profile", default="cpu", help="Training/eval profile in configs/profiles (or a .toml path)")
    train_data = Parameter("train-data", default=str(data.BUNDLED), help="Training data: file, s3:// URI or HF dataset id")
    eval_data = Parameter("eval-data", default="", help="Eval data (file, s3://, HF id); default: held out from --train-data")
    max_steps = Parameter("max-steps", type=int, default=0, help="Optimizer steps per candidate (0: the profile's)")
    on_bad_rows = Parameter("on-bad-rows", default="fail", help="fail: stop on the first bad row; skip: drop and report")
    gpu = Parameter("gpu", default="A100-80GB", help="GPU the recorded cost plan is estimated for")
    output_root = Parameter("output-root", default="runs", help="Local folder or s3:// prefix for data splits and adapters")

    @step
    def start(self):
        self.settings = config.with_overrides(config.load_profile(self.profile), max_steps=self.max_steps)
        selected = registry.select(self.models)
        self.plan = plan.build(selected, self.settings["train"], self.gpu)
        self.candidates, self.refused = registry.runnable(registry.work_items(selected))
        root = self.output_root if storage.is_s3(self.output_root) else os.path.abspath(self.output_root)
        self.run_root = storage.join(root, current.flow_name, str(current.run_id))
        self.data = data.prepare(
            self.train_data, self.eval_data or None, self.run_root, on_bad_rows=self.on_bad_rows,
            eval_fraction=self.settings["eval"]["eval_fraction"], seed=self.settings["eval"]["split_seed"],
        )
        cli.print_data_summary(self.data)
        cli.print_plan(self.plan, self.settings["name"])
        self.next(self.finetune, foreach="candidates")

    @resources(gpu=1, cpu=4, memory=32000)
    @retry(times=1)
    @catch(var="train_failure")
    @card(type="blank", id="training", refresh_interval=5)
    @step
    def finetune(self):
        self.item = self.input
        self.train = None
        if self.item["kind"] == "candidate":
            out = storage.join(self.run_root, self.item["name"])
            steps = training.settings_for(self.item, self.settings["train"])["max_steps"]
            live = cards.LiveTraining(current.card["training"], self.item["name"], steps)
            self.train = training.finetune(self.item, self.data, self.settings["train"], out, on_log=live.update)
        self.next(self.evaluate)

    @resources(gpu=1, cpu=4, memory=32000)
    @catch(var="eval_failure")
    @step
    def evaluate(self):
        self.metrics = None
        if not self.train_failure:
            adapter = self.train["adapter_uri"] if self.train else None
            self.metrics = evaluation.evaluate(self.item, adapter, self.data, self.settings["eval"])
        self.next(self.join)

    @card(type="blank", id="leaderboard")
    @step
    def join(self, inputs):
        results = [leaderboard.task_result(i.item, i.train, i.metrics, i.train_failure, i.eval_failure) for i in inputs]
        self.merge_artifacts(inputs, include=["settings", "data", "plan", "run_root", "candidates", "refused"])
        self.leaderboard = leaderboard.build(results + self.refused, self.settings["policy"])
        self.loss_curves = leaderboard.loss_curves(results)
        self.samples = leaderboard.samples(results)
        current.card["leaderboard"].extend(
            cards.leaderboard_components(self.leaderboard, self.loss_curves, self.data, self.samples))
        self.next(self.end)

    @step
    def end(self):
        cli.print_leaderboard(self.leaderboard)


if __name__ == "__main__":
    FinetuneFlow()
