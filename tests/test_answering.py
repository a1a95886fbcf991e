"""Answer variants map back to classes; generated replies are kept and parsed; settings are checked."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from jaxprobe.capture.answering import AnswerSettings, score_columns, variants
from jaxprobe.capture.forward import ForwardOutput
from jaxprobe.config import apply_override, find_config, load_config, load_config_file
from jaxprobe.errors import ConfigError


def test_variants_are_seeded_permutations_then_paraphrases():
    settings = AnswerSettings(option_orders=3, paraphrases=("Pick one:\n{options}",), seed=1)
    found = variants(4, "Q?\n{options}", settings)
    assert [v.name for v in found] == ["main", "order1", "order2", "paraphrase1"]
    assert found[0].order == (0, 1, 2, 3) and found[3].order == (0, 1, 2, 3)
    assert all(sorted(v.order) == [0, 1, 2, 3] and v.order != (0, 1, 2, 3) for v in found[1:3])
    assert found == variants(4, "Q?\n{options}", settings)  # seeded


def test_scores_of_a_permuted_prompt_return_to_class_order():
    """Options listed as (malignant, normal, benign): letter A's probability belongs to class 2."""
    output = ForwardOutput({}, np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]), None)
    frame = score_columns(output, (2, 0, 1))
    assert frame.answer_pred.tolist() == [2, 1]
    np.testing.assert_allclose(frame[["answer_score_0", "answer_score_1", "answer_score_2"]].to_numpy(),
                               [[0.2, 0.1, 0.7], [0.3, 0.6, 0.1]])


@pytest.mark.parametrize(("key", "value", "named"), [
    ("answer", "'letters'", "capture.answer"), ("option_orders", "0", "option_orders"),
    ("paraphrases", "('no field here',)", "paraphrases"), ("generate.top_p", "0.0", "top_p"),
    ("generate.max_new_tokens", "0", "max_new_tokens"),
])
def test_bad_answer_settings_are_refused_with_the_range(key, value, named):
    with pytest.raises(ConfigError, match=named):  # up front, by the config's rules
        load_config("demo", [f"capture.{key}={value}"])
    config = load_config_file(find_config("demo"))
    apply_override(config, f"capture.{key}={value}")
    with pytest.raises(ConfigError, match=named):  # and by AnswerSettings itself
        AnswerSettings.from_config(config.capture)


def test_defaults_generate_and_score():
    settings = AnswerSettings.from_config(load_config("demo").capture)
    assert settings.mode == "both" and settings.sampling.temperature == 0.0
    assert isinstance(load_config("demo").capture.generate, ml_collections.ConfigDict)
