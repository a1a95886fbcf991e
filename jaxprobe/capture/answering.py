"""The model's own answer to the classification question, and how reliable it is.

- *Option scores*: the softmax over the option letters' first tokens right after the prompt (``answer_pred``,
  ``answer_prob``, ``answer_score_k``): cheap, always parseable, and the calibration's input.
- *Generation* (the study's P_final): the reply decoded greedily (or sampled) and parsed into a class
  (``generated_text``, ``generated_pred``; ``-1`` = unparseable, with ``generated_how`` saying why).
- *Variants* for reliability: the same image asked with the options in other orders (letters permuted) and with
  paraphrased questions; ``variant_<name>_pred`` holds the option-score answer of each, mapped back to classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
import pandas as pd

from jaxprobe.capture.answers import parse_answer
from jaxprobe.capture.forward import ForwardOutput, PooledForward
from jaxprobe.capture.generate import Sampling, trim
from jaxprobe.capture.sites import Site
from jaxprobe.errors import ConfigError

ANSWER_MODES = ("scores", "generate", "both")


@dataclasses.dataclass(frozen=True)
class AnswerSettings:
    mode: str = "both"
    sampling: Sampling = dataclasses.field(default_factory=Sampling)
    option_orders: int = 1  # 1: only the listed order; K: K-1 more random orders of the options
    paraphrases: tuple[str, ...] = ()  # more question templates with an {options} field
    seed: int = 0

    @classmethod
    def from_config(cls, capture: ml_collections.ConfigDict) -> AnswerSettings:
        """The capture section's answer settings, checked (each message gives the valid range)."""
        generate = capture.generate
        problems = []
        if capture.answer not in ANSWER_MODES:
            problems.append(f"capture.answer={capture.answer!r} must be one of {ANSWER_MODES}")
        if generate.max_new_tokens < 1:
            problems.append(f"capture.generate.max_new_tokens={generate.max_new_tokens} must be >= 1")
        if generate.temperature < 0:
            problems.append(f"capture.generate.temperature={generate.temperature} must be >= 0 (0: greedy)")
        if not 0 < generate.top_p <= 1:
            problems.append(f"capture.generate.top_p={generate.top_p} must lie in (0, 1]")
        if capture.option_orders < 1:
            problems.append(f"capture.option_orders={capture.option_orders} must be >= 1")
        problems += [f"capture.paraphrases entry {text!r} needs an {{options}} field"
                     for text in capture.paraphrases if "{options}" not in text]
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(capture.answer, Sampling(generate.max_new_tokens, float(generate.temperature),
                                            float(generate.top_p)),
                   capture.option_orders, tuple(capture.paraphrases), generate.seed)


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    order: tuple[int, ...]  # the class listed at each letter (identity: the dataset's order)
    question: str


def variants(num_classes: int, question: str, settings: AnswerSettings) -> list[Variant]:
    """The canonical question first, then ``option_orders - 1`` seeded permutations, then each paraphrase."""
    identity = tuple(range(num_classes))
    found = [Variant("main", identity, question)]
    rng = np.random.default_rng(settings.seed)
    for k in range(1, settings.option_orders):
        order = tuple(int(i) for i in rng.permutation(num_classes))
        while order == identity and num_classes > 1:
            order = tuple(int(i) for i in rng.permutation(num_classes))
        found.append(Variant(f"order{k}", order, question))
    found += [Variant(f"paraphrase{k + 1}", identity, text) for k, text in enumerate(settings.paraphrases)]
    return found


def score_columns(output: ForwardOutput, order: Sequence[int]) -> pd.DataFrame:
    """answer_pred / answer_prob / answer_score_k (scores put back in class order)."""
    probs = np.empty_like(output.option_probs)
    probs[:, list(order)] = output.option_probs
    frame = pd.DataFrame({"answer_pred": probs.argmax(-1), "answer_prob": probs.max(-1)})
    for k in range(probs.shape[1]):
        frame[f"answer_score_{k}"] = probs[:, k]
    return frame


class Answerer:
    """Runs one batch of images through every variant: sites and answers from the main prompt, the variants'
    option-score answers from the others."""

    def __init__(self, loaded: Any, processor: Any, class_names: Sequence[str], question: str,
                 settings: AnswerSettings, sites: Sequence[Site], mesh: Any, eos: Sequence[int]):
        self.processor, self.class_names, self.settings = processor, list(class_names), settings
        self.variants = variants(len(class_names), question, settings)
        self.prompts = [processor.prompt([self.class_names[i] for i in v.order], v.question) for v in self.variants]
        generating = settings.mode in ("generate", "both")
        self.main = PooledForward(loaded, sites, answer=True, mesh=mesh,
                                  sampling=settings.sampling if generating else None, eos=eos)
        self.eos = tuple(eos)
        self.others = PooledForward(loaded, [], answer=True, mesh=mesh) if len(self.variants) > 1 else None

    @property
    def prompt(self):
        return self.prompts[0]

    def __call__(self, images: Sequence[np.ndarray], key: Any = None, global_batch: int | None = None,
                 count: int | None = None) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        """Sites and answers of ``count`` rows; ``images`` are all of them, or (``global_batch`` set) only this
        process's rows of a padded batch of that size (``PooledForward.place``)."""
        batch = dict(global_batch=global_batch, count=count)
        main = self.main(self.processor.encode(self.prompt, images), self.prompt.option_token_ids, key, **batch)
        frames = []
        if self.settings.mode in ("scores", "both"):
            frames.append(score_columns(main, self.variants[0].order))
        if main.tokens is not None:
            frames.append(self._generated(main.tokens))
        for variant, prompt in zip(self.variants[1:], self.prompts[1:], strict=True):
            output = self.others(self.processor.encode(prompt, images), prompt.option_token_ids, **batch)
            frames.append(pd.DataFrame({f"variant_{variant.name}_pred":
                                        np.asarray(variant.order)[output.option_probs.argmax(-1)]}))
        return main.features, pd.concat(frames, axis=1)

    def _generated(self, tokens: np.ndarray) -> pd.DataFrame:
        texts = [self.processor.tokenizer.decode(row, skip_special_tokens=True) for row in trim(tokens, self.eos)]
        parsed = [parse_answer(text, self.prompt.letters, self.class_names) for text in texts]
        return pd.DataFrame({"generated_text": pd.Series(texts, dtype=object),
                             "generated_pred": [p.prediction for p in parsed],
                             "generated_how": pd.Series([p.how for p in parsed], dtype=object)})
