"""Request bodies of the rollout service and the checks pydantic cannot do on its own.

Every check raises FastAPI's ``RequestValidationError``, so a bad request gets the same 422
answer as a malformed body: ``{"detail": [{"loc": ["body", "tasks", 0, "env_id"], "msg": ...}]}``
with the field named and, where there is a fixed set, the allowed values.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentrl.env import env_ids
from agentrl.rollout.config import RolloutConfig, RolloutTask

__all__ = ["RolloutRequest", "WeightsRequest", "check_tasks", "merge_config"]

MAX_TASKS = 10_000


class RolloutRequest(BaseModel):
    """Body of ``POST /rollouts`` and ``POST /rollouts/collect``."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[RolloutTask] = Field(
        min_length=1, max_length=MAX_TASKS, description="Prompts to roll out, one group each."
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the server's default RolloutConfig fields for this request.",
    )


class WeightsRequest(BaseModel):
    """Body of ``POST /weights``."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="Folder on the server holding *.safetensors files.")
    version: int | None = Field(
        default=None, ge=0, description="New weight version; None: the current one plus 1."
    )


def merge_config(default: RolloutConfig, overrides: dict[str, Any]) -> RolloutConfig:
    """``default`` with ``overrides`` applied, validated as a whole (cross-field rules included).

    Raises:
        RequestValidationError: naming ``body.config.<field>`` for an unknown or invalid field.
    """
    try:
        return RolloutConfig.model_validate({**default.model_dump(), **overrides})
    except ValidationError as e:
        errors = []
        for err in e.errors(include_url=False, include_context=False):
            err = dict(err)
            err["loc"] = ("body", "config", *err["loc"])
            if err["type"] == "extra_forbidden":
                err["msg"] = f"unknown config field; valid: {sorted(RolloutConfig.model_fields)}"
            errors.append(err)
        raise RequestValidationError(errors) from None


def check_tasks(tasks: list[RolloutTask]) -> None:
    """Reject unknown env ids and repeated explicit group ids before any episode starts.

    Raises:
        RequestValidationError: naming ``body.tasks.<i>.env_id`` or ``body.tasks.<i>.group_id``.
    """
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, task in enumerate(tasks):
        if task.env_id not in gym.registry:
            valid = ", ".join(env_ids()) or "(none)"
            errors.append(_error(("tasks", i, "env_id"), task.env_id,
                                 f"unknown env id {task.env_id!r}; registered: {valid}"))
        if task.group_id is not None:
            if task.group_id in seen:
                errors.append(_error(("tasks", i, "group_id"), task.group_id,
                                     f"group id {task.group_id!r} repeats task {seen[task.group_id]}'s; "
                                     "group ids must be distinct"))
            seen.setdefault(task.group_id, i)
    if errors:
        raise RequestValidationError(errors)


def _error(loc: tuple[Any, ...], value: Any, msg: str) -> dict[str, Any]:
    return {"loc": ("body", *loc), "msg": msg, "type": "value_error", "input": value}
