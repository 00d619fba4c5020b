"""Llama 2's combination of per-axis reward models (training/engine/combination.py) and
its wiring in the RL engine's config and reward function (issue #21). No Django, no models."""

from __future__ import annotations

import math

import pytest

from training.engine.combination import (
    Combination,
    combination_from_dict,
    combine,
    llama2_rewards,
    sigmoid,
)
from training.engine.rl import CombinedReward, RLTrainingConfig, unique_prompts

LLAMA2 = {"rule": "llama2", "safety_axis": "harmless", "helpful_axis": "helpful", "safety_threshold": 0.15}
AXES = {"helpful", "harmless"}
LOGIT_015 = math.log(0.15 / 0.85)  # the raw score whose sigmoid is the threshold


def test_safe_answers_get_the_helpfulness_score_and_unsafe_ones_the_safety_score() -> None:
    helpful = [2.0, 2.0, -1.0]
    safety = [3.0, LOGIT_015 - 0.01, LOGIT_015 + 0.01]  # safe; just below the threshold; just above

    assert llama2_rewards(helpful, safety, threshold=0.15) == [2.0, LOGIT_015 - 0.01, -1.0]


def test_a_prompt_flagged_unsafe_is_rewarded_by_the_safety_model_whatever_its_score() -> None:
    rewards = llama2_rewards([5.0, 5.0], [4.0, 4.0], threshold=0.15, unsafe=[True, False])

    assert rewards == [4.0, 5.0]


def test_the_threshold_is_a_probability_compared_with_the_sigmoid_of_the_score() -> None:
    assert sigmoid(0.0) == 0.5 and sigmoid(-800.0) == 0.0 and sigmoid(800.0) == 1.0
    # A raw safety score of -1 is p = 0.27: safe at 0.15, unsafe at 0.5.
    assert llama2_rewards([1.0], [-1.0], threshold=0.15) == [1.0]
    assert llama2_rewards([1.0], [-1.0], threshold=0.5) == [-1.0]


def test_scores_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one value per sample"):
        llama2_rewards([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="one value per sample"):
        llama2_rewards([1.0], [1.0], unsafe=[True, False])


def test_combine_reads_the_scores_by_axis() -> None:
    combination = combination_from_dict(LLAMA2, AXES)

    assert combine(combination, {"helpful": [1.0, 1.0], "harmless": [-5.0, 5.0]}) == [-5.0, 1.0]


@pytest.mark.parametrize(("change", "message"), [
    ({"rule": "average"}, "rule must be one of llama2"),
    ({"rule": None}, "rule must be one of"),
    ({"safety_threshold": 1.5}, "between 0 and 1"),
    ({"safety_threshold": True}, "between 0 and 1"),
    ({"safety_threshold": "0.1"}, "between 0 and 1"),
    ({"safety_axis": "toxicity"}, "safety_axis 'toxicity' must be one of"),
    ({"helpful_axis": "harmless"}, "must be different"),
    ({"weights": [1, 2]}, "unknown combination fields"),
])
def test_bad_combinations_are_refused(change, message) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        combination_from_dict({**LLAMA2, **change}, AXES)


def test_llama2_combines_exactly_two_models() -> None:
    with pytest.raises(ValueError, match="exactly two"):
        combination_from_dict(LLAMA2, AXES | {"honest"})


def test_the_default_threshold_is_llama2s() -> None:
    data = {k: v for k, v in LLAMA2.items() if k != "safety_threshold"}

    assert combination_from_dict(data, AXES) == Combination("llama2", "harmless", "helpful", 0.15)


def test_rl_config_takes_per_axis_models_with_a_combination_or_one_model() -> None:
    config = RLTrainingConfig(model="m", reward_models={"helpful": "/rm/h", "harmless": "/rm/s"}, combination=LLAMA2)
    assert config.to_dict()["combination"] == LLAMA2  # recorded in the run config and the manifest
    assert RLTrainingConfig.from_dict(config.to_dict()).reward_models == {"helpful": "/rm/h", "harmless": "/rm/s"}
    assert RLTrainingConfig(model="m", reward_model="/rm").reward_models is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"reward_models": {"helpful": "/h", "harmless": "/s"}}, "needs a combination"),
    ({"reward_models": {"helpful": "/h", "harmless": "/s"}, "combination": {**LLAMA2, "rule": "max"}},
     "rule must be one of"),
    ({"reward_models": {"helpful": "/h", "harmless": "/s"}, "combination": LLAMA2, "reward_model": "/rm"},
     "not both"),
    ({"reward_models": {"helpful": "", "harmless": "/s"}, "combination": LLAMA2}, "map axis keys"),
    ({"reward_model": "/rm", "combination": LLAMA2}, "combination needs reward_models"),
    ({}, "reward_model is required"),
])
def test_rl_config_refuses_inconsistent_reward_models(kwargs, message) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        RLTrainingConfig(model="m", **kwargs)


class FixedScorer:
    """A stand-in reward model: one fixed score per completion."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def __call__(self, prompts, completions, **kwargs) -> list[float]:  # noqa: ANN001, ANN003
        return [self.scores[c] for c in completions]


def test_the_combined_reward_function_scores_with_every_model_and_applies_the_rule() -> None:
    reward = CombinedReward(
        {"helpful": FixedScorer({"ok": 2.0, "harmful": 3.0, "refusal": -1.0}),
         "harmless": FixedScorer({"ok": 1.0, "harmful": -4.0, "refusal": 2.0})},
        combination_from_dict(LLAMA2, AXES))

    completions = ["ok", "harmful", "refusal", "ok"]
    rewards = reward(["p"] * 4, completions, unsafe=[False, False, False, True])

    assert rewards == [2.0, -4.0, -1.0, 1.0]  # the last prompt is flagged unsafe: the safety score
    assert reward(["p"], ["harmful"]) == [-4.0]  # no flags: the threshold alone decides
    assert reward.__name__ == "ordinal_combined_reward"


def test_unique_prompts_keep_an_unsafe_flag_when_the_file_has_one() -> None:
    datasets = pytest.importorskip("datasets")
    hello = [{"role": "user", "content": "hello"}]
    bomb = [{"role": "user", "content": "how do I build a bomb"}]
    rows = datasets.Dataset.from_list([
        {"prompt": hello, "unsafe": False}, {"prompt": bomb, "unsafe": False}, {"prompt": bomb, "unsafe": True},
    ])

    unique = unique_prompts(rows)

    assert unique["unsafe"] == [False, True]  # a prompt any row flags is unsafe
    plain = unique_prompts(rows.remove_columns(["unsafe"]))
    assert plain.column_names == ["prompt"] and len(plain) == 2


def test_the_rl_engine_loads_one_scorer_per_axis_under_the_combination(monkeypatch) -> None:  # noqa: ANN001
    from training.engine import reward, rl

    loaded = []

    def load(folder, *, device=None, batch_size=16):  # noqa: ANN001, ANN202
        loaded.append(folder)
        return FixedScorer({"x": {"/rm/h": 1.0, "/rm/s": -9.0}[folder]})

    monkeypatch.setattr(reward.RewardScorer, "load", staticmethod(load))
    config = RLTrainingConfig(model="m", reward_models={"helpful": "/rm/h", "harmless": "/rm/s"}, combination=LLAMA2)

    function = rl.reward_function(config, "cpu")

    assert sorted(loaded) == ["/rm/h", "/rm/s"] and isinstance(function, CombinedReward)
    assert function(["p"], ["x"]) == [-9.0]  # sigmoid(-9) < 0.15: the safety model's score
    single = rl.reward_function(RLTrainingConfig(model="m", reward_model="/rm/h"), "cpu")
    assert single(["p"], ["x"]) == [1.0] and loaded[-1] == "/rm/h"


def test_unique_prompts_read_an_ordinal_snapshots_unsafe_flag() -> None:
    """An SFT snapshot has no `unsafe` column: its `flags` carry "unsafe" where people
    marked one of the item's answers unsafe (training/snapshots.py)."""
    datasets = pytest.importorskip("datasets")
    hello = [{"role": "user", "content": "hello"}]
    bomb = [{"role": "user", "content": "how do I build a bomb"}]
    rows = datasets.Dataset.from_list([
        {"prompt": hello, "flags": []}, {"prompt": bomb, "flags": ["all_bad"]},
        {"prompt": bomb, "flags": ["unsafe"]},
    ])

    assert unique_prompts(rows)["unsafe"] == [False, True]
