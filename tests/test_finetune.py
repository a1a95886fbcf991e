"""LoRA SFT on the tiny model and synthetic_lesions: it learns, touches only the adapter, reads only its split,
and a run killed mid-way resumes to the same adapter as an uninterrupted one."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import traverse_util

from jaxprobe.capture.generate import eos_token_ids
from jaxprobe.config import load_config
from jaxprobe.errors import ConfigError
from jaxprobe.families.loading import load_model
from jaxprobe.features import FeatureStore, split_fingerprint
from jaxprobe.finetune import loop, sft
from jaxprobe.finetune.settings import FinetuneSettings
from jaxprobe.finetune.stage import data_context
from jaxprobe.parallel import make_mesh

# The demo's fine-tuning schedule on 32 px images (4 image tokens): a random tiny model's features carry almost no
# class signal, so its answers improve only by learning the training images (measured: 0.29 -> 0.65 on train).
LEARN = ["capture.resolution=32", "finetune.train.epochs=18"]
SHORT = ["capture.resolution=32", "finetune.train.epochs=1", "finetune.train.save_every=4",
         "finetune.train.grad_accum=2", "finetune.lora.dropout=0.1", "finetune.train.batch_size=4"]


def context_of(workdir, overrides):
    config = load_config("finetune_demo", [f"workdir={workdir}", *overrides])
    return config, FinetuneSettings.from_config(config.finetune), data_context(config)


def setup_of(config, settings, context, loaded, mesh):
    return sft.prepare_lora(loaded, context.processor, context.rows, config.capture.question, settings.lora,
                            settings.schedule, settings.answer, eos_token_ids(context.checkpoint), False, mesh)


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """One LoRA SFT run, with every image load and every training batch recorded."""
    workdir = tmp_path_factory.mktemp("sft")
    config, settings, context = context_of(workdir, LEARN)
    loaded_ids, stepped = [], []
    index = context.rows.index

    def recording_load(row):
        loaded_ids.append(index["id"].iloc[row])
        return load(row)

    def recording_batches(*args, **kwargs):
        batches = epoch_batches(*args, **kwargs)
        stepped.append([index["id"].iloc[row] for batch in batches for row in batch])
        return batches

    load, epoch_batches = context.rows.load, loop.epoch_batches
    context = dataclasses.replace(context, rows=dataclasses.replace(context.rows, load=recording_load))
    mesh = make_mesh(None, 1)  # all 8 test devices on the data axis
    loaded = load_model(context.checkpoint, mesh=mesh, cache_dir=False)
    before = jax.tree.map(np.array, loaded.params)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "epoch_batches", recording_batches)
        run = sft.train_lora(setup_of(config, settings, context, loaded, mesh), settings.schedule, workdir / "lora",
                             "test", log=lambda _: None)
    return run, loaded, before, context, set(loaded_ids), stepped


def test_lora_sft_drives_the_loss_down_and_train_accuracy_up(learned):
    run = learned[0]
    losses = np.asarray(run.progress.losses)
    assert losses[-20:].mean() < 0.5 * losses[:5].mean()
    assert run.after["train"]["loss"] < 0.5 * run.before["train"]["loss"]
    before, after = run.before["train"]["accuracy"], run.after["train"]["accuracy"]
    print(f"train answer accuracy {before:.3f} -> {after:.3f}, loss {losses[:5].mean():.3f} -> "
          f"{losses[-20:].mean():.3f}")
    assert before < 0.45 and after >= before + 0.25, (before, after)


def test_only_the_adapter_changes(learned):
    run, loaded, before, *_ = learned
    for path, value in traverse_util.flatten_dict(loaded.params).items():
        np.testing.assert_array_equal(np.asarray(value), traverse_util.flatten_dict(before)[path], err_msg=str(path))
    flat = traverse_util.flatten_dict(run.lora)
    assert all(np.asarray(flat[path]).any() for path in flat if path[-1] == "b")  # B started at zero
    np.testing.assert_array_equal(np.concatenate([np.ravel(v) for p, v in flat.items() if p[-1] == "scale"]), 2.0)


def test_training_reads_only_the_train_split(learned):
    """Gradient steps see train rows only; val is read for early stopping only; test is never loaded."""
    _, _, _, context, loaded_ids, stepped = learned
    split = context.rows.index.set_index("id")["split"]
    assert stepped and {split[i] for epoch in stepped for i in epoch} == {"train"}
    assert all(sorted(epoch) == sorted(split.index[split == "train"]) for epoch in stepped)  # each row once
    assert {split[i] for i in loaded_ids} == {"train", "val"}


def test_killed_training_resumes_to_the_same_adapter(tmp_path):
    config, settings, context = context_of(tmp_path, SHORT)
    setup = setup_of(config, settings, context, load_model(context.checkpoint, mesh=make_mesh(None, 1),
                                                           cache_dir=False), make_mesh(None, 1))
    rows, val = context.rows.of("train"), context.rows.of("val")

    def run(directory, fingerprint="test"):
        return loop.train(setup.task, setup.frozen, setup.trainable, rows, context.rows.sizes, val, settings.schedule,
                          tmp_path / directory, fingerprint, log=lambda _: None)

    whole, whole_progress = run("whole")
    calls = {"n": 0}
    real = loop.epoch_batches

    def die_at_step_11(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "epoch_batches", die_at_step_11)
        with pytest.raises(KeyboardInterrupt):
            run("killed")
    assert calls["n"] == 11
    resumed, resumed_progress = run("killed")
    assert resumed_progress.micro == whole_progress.micro == 21
    assert resumed_progress.losses == whole_progress.losses
    for path, value in traverse_util.flatten_dict(whole).items():
        np.testing.assert_array_equal(np.asarray(traverse_util.flatten_dict(resumed)[path]), np.asarray(value))
    with pytest.raises(ConfigError, match="other settings"):
        run("killed", fingerprint="other")


class ScriptedValTask:
    """A loop.Task on a one-weight regression whose val accuracy follows a script: early stopping and the kept
    weights are checked against it without depending on what a model happens to learn."""

    def __init__(self, script):
        self.script, self.seen = list(script), []

    def batch(self, rows):
        return np.asarray(rows, np.float32)

    def loss(self, trainable, frozen, batch, key):
        return ((trainable["w"] - batch.mean()) ** 2).sum()

    def evaluate(self, trainable, frozen, rows):
        self.seen.append(np.asarray(trainable["w"]).copy())
        accuracy = self.script[len(self.seen) - 1]
        return {"accuracy": accuracy, "loss": 1.0 - accuracy}


def test_early_stopping_on_val_keeps_the_best_evaluation(tmp_path):
    """Evaluations every optimizer step; val accuracy rises to 0.7 at step 2 then falls: with patience 2 the run
    stops after step 4 and returns the weights it had at step 2."""
    config = load_config("demo", ["finetune.train.eval_every=1", "finetune.train.patience=2",
                                  "finetune.train.grad_accum=1", "finetune.train.batch_size=1",
                                  "finetune.train.epochs=3", "finetune.train.learning_rate=0.1"])
    schedule = FinetuneSettings.from_config(config.finetune).schedule
    task = ScriptedValTask([0.5, 0.6, 0.7, 0.65, 0.6, 0.9])  # before training, then after steps 1, 2, ...
    rows = list(range(4))
    best, progress = loop.train(task, {}, {"w": jax.numpy.zeros(())}, rows, [(1, 1)] * 4, [0], schedule,
                                tmp_path / "run", "test", log=lambda _: None)
    assert progress.stopped_early and progress.micro == 4 and len(task.seen) == 5
    assert progress.best["step"] == 2 and progress.best["accuracy"] == 0.7
    np.testing.assert_array_equal(np.asarray(best["w"]), task.seen[2])
    assert not np.array_equal(task.seen[2], task.seen[4])  # training went on after the best step


E2E = ["probe.folds=3", "probe.permutations=3", "probe.bootstrap=100", "probe.logistic_lambdas=(1.0, 0.01)",
       "probe.kinds=('logistic',)", "capture.resolution=32", "capture.generate.max_new_tokens=4",
       "finetune.train.epochs=4", "finetune.vision.train.epochs=2"]


@pytest.fixture(scope="module")
def before_after(tmp_path_factory):
    """`jaxprobe run` with finetune.enabled=True on the demo: vision baseline -> before -> LoRA SFT -> after."""
    from jaxprobe.cli import main

    workdir = tmp_path_factory.mktemp("before_after")
    assert main(["run", "finetune_demo", *[arg for o in [*E2E, f"workdir={workdir}"] for arg in ("--set", o)]]) == 0
    return workdir


def test_run_with_finetuning_writes_both_curves_and_the_overlay(before_after):
    import json

    root = before_after
    for name in ("report.html", "overlay.png", "profiles.png", "before_after.json", "finetune/adapter/adapter.json",
                 "finetune/peft/adapter_model.safetensors", "before/scores.json", "after/scores.json"):
        assert (root / name).is_file(), name
    facts = json.loads((root / "before_after.json").read_text())
    scores = {run: json.loads((root / run / "scores.json").read_text()) for run in ("before", "after")}
    assert facts["p_final"] == {run: scores[run]["profile"]["final"] for run in scores}
    curves = {run: {row["site"]: row["accuracy"] for row in scores[run]["curve"]} for run in scores}
    assert set(curves["before"]) == set(curves["after"]) and len(curves["before"]) > 4
    vision_sites = [site for site in curves["before"] if site.startswith("vision.")]
    assert [curves["before"][s] for s in vision_sites] == [curves["after"][s] for s in vision_sites]  # tower frozen
    assert curves["before"] != curves["after"]  # the LLM changed
    html = (root / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "fine-tuned (LoRA)" in html
    after_manifest = json.loads((root / "after" / "manifest.json").read_text())
    assert after_manifest["config"]["model"]["adapter"] == str(root / "finetune" / "adapter")
    assert json.loads((root / "before" / "manifest.json").read_text())["config"]["model"]["adapter"] is None


def test_the_vision_baseline_is_the_visual_verdicts_reference(before_after):
    import json

    baseline = json.loads((before_after / "vision_baseline.json").read_text())
    assert baseline["split"] == "test" and 0 < baseline["accuracy"] <= 1
    for run in ("before", "after"):
        scores = json.loads((before_after / run / "scores.json").read_text())
        assert scores["reference"] == {"accuracy": baseline["accuracy"],
                                       "source": str(before_after / run / "vision_baseline.json")}
        assert f"the reference {baseline['accuracy']:.3f} less the margin" in json.dumps(scores["diagnosis"])
        store = FeatureStore.open(before_after / run / "features")
        assert baseline["split_fingerprint"] == split_fingerprint(store.index)  # made on this run's split


def test_a_vision_baseline_from_another_split_is_refused(tmp_path):
    import json

    from jaxprobe.errors import FeatureError
    from jaxprobe.scoring.reference import reference_accuracy

    path = tmp_path / "vision_baseline.json"
    path.write_text(json.dumps({"accuracy": 0.8, "split_fingerprint": "a1"}))
    assert reference_accuracy(tmp_path, None, "a1") == (0.8, str(path))
    with pytest.raises(FeatureError, match="another train/val/test split"):
        reference_accuracy(tmp_path, None, "b2")
    assert reference_accuracy(tmp_path, 0.9, "b2") == (0.9, "config")  # a configured reference needs no file
