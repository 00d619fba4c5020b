"""SamplingParams validation: out-of-range values fail early with a message naming them."""

from __future__ import annotations

from typing import Any

import pytest

from training.engine.sampling import InvalidSamplingParams, SamplingParams


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 1}, "k must be an integer >= 2"),
        ({"k": 0}, "k must be an integer >= 2"),
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer > 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"stop": ("",)}, "stop sequences must be non-empty strings"),
    ],
)
def test_out_of_range_values_are_rejected(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSamplingParams, match=message):
        SamplingParams(**change)


def test_the_error_is_a_value_error_listing_every_problem() -> None:
    with pytest.raises(ValueError, match="k must.*temperature must"):
        SamplingParams(k=1, temperature=-1)


def test_defaults_sample_at_temperature_one() -> None:
    params = SamplingParams()

    assert (params.k, params.temperature, params.top_p) == (4, 1.0, 1.0)


def test_greedy_and_full_nucleus_are_allowed() -> None:
    SamplingParams(k=2, temperature=0, top_p=1.0, max_new_tokens=1)


def test_to_dict_is_json_ready() -> None:
    params = SamplingParams(stop=["###"], system_prompt="Be kind.")

    assert params.to_dict() == {
        "k": 4,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_new_tokens": 256,
        "seed": 0,
        "stop": ["###"],
        "system_prompt": "Be kind.",
    }
