"""One row of an import file (a dict from JSONL, CSV or Parquet) into a ParsedRow: the
prompt's messages, its candidates, an optional preference and metadata, or InvalidRow
with a reason a person can act on. No database access."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from labeling.importing.reading import InvalidRow
from labeling.prompt_metadata import metadata_problem, unstorable_at

ROLES = {"system", "user", "assistant"}
HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


@dataclass(frozen=True)
class ParsedCandidate:
    text: str
    model: str = ""


@dataclass(frozen=True)
class ParsedRow:
    line: int
    messages: list[dict[str, str]]
    candidates: list[ParsedCandidate]
    preference: tuple[int, int] | None = None  # (chosen, rejected) indices
    margin: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _text(value: Any, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise InvalidRow(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidRow(f"{what} is empty")
    if len(value) > max_chars:
        raise InvalidRow(f"{what} is too long ({len(value)} characters; limit {max_chars})")
    _storable(value, what)
    return value


def _storable(value: str, what: str) -> None:
    position = unstorable_at(value)
    if position is not None:
        raise InvalidRow(f"{what} holds a character that cannot be stored at position {position} "
                         "(NUL, or half of a surrogate pair)")


def _messages(value: Any, max_chars: int, *, what: str = "messages") -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise InvalidRow(f"{what} must be a non-empty list of {{role, content}} objects")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise InvalidRow(f"{what}[{index}] must be an object with 'role' and 'content'")
        role = message["role"]
        if role not in ROLES:
            raise InvalidRow(f"{what}[{index}].role must be system, user or assistant")
        if role == "system" and index != 0:
            raise InvalidRow(f"{what}[{index}]: a system message may only come first")
        content = _text(message["content"], f"{what}[{index}].content", max_chars)
        messages.append({"role": role, "content": content})
    return messages


def _prompt_messages(record: dict[str, Any], max_chars: int) -> list[dict[str, str]]:
    if "messages" in record:
        messages = _messages(record["messages"], max_chars)
    elif "prompt" in record:
        prompt = record["prompt"]
        if isinstance(prompt, list):
            messages = _messages(prompt, max_chars, what="prompt")
        else:
            messages = [{"role": "user", "content": _text(prompt, "prompt", max_chars)}]
    else:
        raise InvalidRow("missing field 'prompt' (or 'messages')")
    system = record.get("system")
    if system not in (None, ""):
        if messages[0]["role"] == "system":
            raise InvalidRow("both 'system' and a system message given")
        messages.insert(0, {"role": "system", "content": _text(system, "system", max_chars)})
    if messages[-1]["role"] != "user":
        raise InvalidRow("the prompt must end with a user message")
    return messages


def _candidate(value: Any, what: str, max_chars: int) -> ParsedCandidate:
    if isinstance(value, dict):
        if "text" not in value:
            raise InvalidRow(f"{what} must have a 'text' field")
        model = value.get("model") or ""
        if not isinstance(model, str):
            raise InvalidRow(f"{what}.model must be a string")
        _storable(model, f"{what}.model")
        return ParsedCandidate(_text(value["text"], f"{what}.text", max_chars), model[:255])
    return ParsedCandidate(_text(value, what, max_chars))


def _hh_transcript(value: str, what: str) -> list[dict[str, str]]:
    parts = HH_TURN.split(value)
    if len(parts) < 3 or parts[0].strip():
        raise InvalidRow(f"{what} is not an HH transcript ('\\n\\nHuman: ... \\n\\nAssistant: ...')")
    return [
        {"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1]}
        for i in range(1, len(parts), 2)
    ]


def _split_conversation(
    chosen: list[dict[str, str]], rejected: list[dict[str, str]]
) -> tuple[list[dict[str, str]], str, str]:
    """Implicit-prompt preference: both conversations share every turn but the last."""
    for name, conversation in (("chosen", chosen), ("rejected", rejected)):
        if conversation[-1]["role"] != "assistant":
            raise InvalidRow(f"{name} must end with an assistant turn")
    if chosen[:-1] != rejected[:-1]:
        raise InvalidRow("chosen and rejected differ before the final assistant turn")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def _answer(value: Any, what: str, max_chars: int) -> str:
    if isinstance(value, list):
        messages = _messages(value, max_chars, what=what)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise InvalidRow(f"{what} must be a single assistant message")
        return messages[0]["content"]
    return _text(value, what, max_chars)


def _preference_row(record: dict[str, Any], line: int, max_chars: int) -> ParsedRow:
    chosen, rejected = record["chosen"], record["rejected"]
    if "prompt" in record or "messages" in record:
        messages = _prompt_messages(record, max_chars)
        chosen_text = _answer(chosen, "chosen", max_chars)
        rejected_text = _answer(rejected, "rejected", max_chars)
    else:
        if isinstance(chosen, str) and isinstance(rejected, str):
            conversations = _hh_transcript(chosen, "chosen"), _hh_transcript(rejected, "rejected")
        elif isinstance(chosen, list) and isinstance(rejected, list):
            conversations = (
                _messages(chosen, max_chars, what="chosen"),
                _messages(rejected, max_chars, what="rejected"),
            )
        else:
            raise InvalidRow("chosen and rejected must both be strings or both message lists")
        messages, chosen_text, rejected_text = _split_conversation(*conversations)
        if not messages:
            raise InvalidRow("no prompt before the final assistant turn")
        messages = _messages(messages, max_chars, what="prompt")
        if messages[-1]["role"] != "user":
            raise InvalidRow("the prompt must end with a user message")
        chosen_text = _text(chosen_text, "chosen answer", max_chars)
        rejected_text = _text(rejected_text, "rejected answer", max_chars)
    margin = record.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | float)):
        try:
            margin = float(margin)
        except (TypeError, ValueError):
            raise InvalidRow("margin must be a number") from None
    if margin is not None and not math.isfinite(margin):
        raise InvalidRow("margin must be a finite number")
    return ParsedRow(
        line=line, messages=messages,
        candidates=[ParsedCandidate(chosen_text), ParsedCandidate(rejected_text)],
        preference=(0, 1), margin=None if margin is None else float(margin),
        metadata=_metadata(record, {"prompt", "messages", "system", "chosen", "rejected",
                                    "margin"}),
    )


def _metadata(record: dict[str, Any], consumed: set[str]) -> dict[str, Any]:
    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRow("metadata must be an object")
    extra = {
        key: value for key, value in record.items()
        if key not in consumed and key != "metadata"
        and isinstance(value, str | int | float | bool | type(None))
    }
    merged = {**extra, **(metadata or {})}
    problem = metadata_problem(merged)
    if problem:
        raise InvalidRow(problem)
    return merged


def parse_row(record: dict[str, Any], line: int, *, max_chars: int, max_candidates: int
              ) -> ParsedRow:
    """Validate one record and normalise it; raises InvalidRow with the reason."""
    if "chosen" in record or "rejected" in record:
        if "chosen" not in record or "rejected" not in record:
            raise InvalidRow("a preference row needs both 'chosen' and 'rejected'")
        return _preference_row(record, line, max_chars)
    messages = _prompt_messages(record, max_chars)
    raw_candidates = record.get("candidates") or []
    if not isinstance(raw_candidates, list):
        raise InvalidRow("candidates must be a list")
    if len(raw_candidates) > max_candidates:
        raise InvalidRow(
            f"{len(raw_candidates)} candidates, but the project ranks at most "
            f"{max_candidates} answers per item (its K)"
        )
    candidates = [
        _candidate(value, f"candidates[{index}]", max_chars)
        for index, value in enumerate(raw_candidates)
    ]
    return ParsedRow(
        line=line, messages=messages, candidates=candidates,
        metadata=_metadata(record, {"prompt", "messages", "system", "candidates"}),
    )


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
