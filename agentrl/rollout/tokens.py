"""Exact multi-turn token bookkeeping: build a trajectory's ids once, never re-tokenize.

The prompt is rendered once with the chat template. The model's generated ids are appended as
they came (loss mask 1, with their rollout logprobs). Each feedback or tool message is rendered
as the *difference* between the template applied with and without it (including the generation
prompt of the next assistant turn) and appended with mask 0. If the model stopped without the
end-of-turn token (a length cut or a stop string), the template's end-of-turn text is appended
with mask 0, so every assistant turn is closed the way the template closes it.

Where a chat template breaks the prefix property (rendering more messages changes the text of
earlier ones, e.g. templates that strip past reasoning), the delta is computed on a minimal
two-message conversation instead, and the break is recorded in :attr:`TokenBuilder.prefix_breaks`
(and surfaced in ``Trajectory.metadata``), never hidden. :func:`check_prefix_property` reports
where a template breaks it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "TemplatePrefixError",
    "TokenBuilder",
    "check_prefix_property",
    "prompt_messages",
    "render",
]


class TemplatePrefixError(ValueError):
    """The chat template cannot render a message as an append-only delta."""


def render(tokenizer: Any, messages: list[dict[str, Any]], *, generation_prompt: bool,
           tools: list[dict[str, Any]] | None = None) -> str:
    """The chat template's text for ``messages``."""
    kw: dict[str, Any] = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt, **kw
    )


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of template text (the template already holds every special token)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_messages(
    obs: str, info: dict[str, Any], tokenizer: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Messages for the first model turn and the ``tools=`` argument for the template.

    ``[system (info["system_prompt"]) if any, user (obs)]``. With ``info["tools"]``: passed to
    the template when it supports tools natively, else described in the system prompt by
    :func:`agentrl.tool.tools_system_prompt`.
    """
    system = info.get("system_prompt")
    tools = info.get("tools") or None
    template_tools = None
    if tools:
        try:
            from agentrl.tool import supports_native_tools, tools_system_prompt
        except ImportError:  # the tool module is optional here
            system = _plain_tools_prompt(tools, system)
        else:
            if supports_native_tools(tokenizer):
                template_tools = tools
            else:
                system = tools_system_prompt(tools, system)
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": obs})
    return messages, template_tools


def _plain_tools_prompt(tools: list[dict[str, Any]], system: str | None) -> str:
    schemas = "\n".join(json.dumps(t) for t in tools)
    head = f"{system}\n\n" if system else ""
    return f"{head}You may call these tools:\n{schemas}"


def feedback_messages(feedback: str, info: dict[str, Any]) -> list[dict[str, Any]]:
    """``info["feedback_messages"]`` if the env gave them, else the feedback as a user message."""
    msgs = info.get("feedback_messages")
    if msgs:
        out = []
        for m in msgs:
            d = {"role": m["role"], "content": m.get("content", "")}
            if m.get("name") is not None:
                d["name"] = m["name"]
            out.append(d)
        return out
    return [{"role": "user", "content": feedback}]


class TokenBuilder:
    """The growing token ids, loss mask and rollout logprobs of one episode (or tree path).

    Example:
        >>> tb = TokenBuilder(tokenizer, [{"role": "user", "content": "Guess."}])
        >>> action = tb.add_generation(gen.token_ids, gen.logprobs)
        >>> tb.add_feedback([{"role": "user", "content": "Too low."}])
        >>> tb.token_ids  # prompt + generated + feedback delta (+ next generation prompt)
    """

    def __init__(self, tokenizer: Any, messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]] | None = None) -> None:
        self.tokenizer = tokenizer
        self.tools = tools
        self.messages = [dict(m) for m in messages]
        self.text = render(tokenizer, self.messages, generation_prompt=True, tools=tools)
        self.token_ids = encode(tokenizer, self.text)
        self.prompt_len = len(self.token_ids)
        self.loss_mask = [0] * self.prompt_len
        self.logprobs = [0.0] * self.prompt_len
        self.prefix_breaks: list[str] = []
        self._eos_text = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else ""
        self._open: tuple[str, bool] | None = None  # (action text, ended with eos) of an open turn

    def copy(self) -> TokenBuilder:
        """An independent copy (for branching: siblings continue from the same state)."""
        new = object.__new__(TokenBuilder)
        new.__dict__.update(self.__dict__)
        for name in ("messages", "token_ids", "loss_mask", "logprobs", "prefix_breaks"):
            setattr(new, name, list(getattr(self, name)))
        return new

    def add_generation(self, token_ids: list[int], logprobs: list[float]) -> str:
        """Append the model's ids (mask 1) and return the action text (special tokens skipped)."""
        if self._open is not None:
            raise RuntimeError("add_generation: the previous assistant turn has no feedback yet")
        if len(token_ids) != len(logprobs):
            raise ValueError(f"logprobs: length {len(logprobs)} != token_ids length {len(token_ids)}")
        self.token_ids += token_ids
        self.loss_mask += [1] * len(token_ids)
        self.logprobs += [float(x) for x in logprobs]
        action = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        ended = bool(token_ids) and token_ids[-1] == self.tokenizer.eos_token_id
        self._open = (action, ended)
        return action

    def add_feedback(self, messages: list[dict[str, Any]]) -> None:
        """Close the open assistant turn, append ``messages`` and the next generation prompt."""
        if self._open is None:
            raise RuntimeError("add_feedback: no assistant turn to answer (call add_generation first)")
        action, ended = self._open
        history = [*self.messages, {"role": "assistant", "content": action}]
        with_fb = [*history, *messages]
        try:
            closing, hist_text = self._closing(history, action)
            after = render(self.tokenizer, with_fb, generation_prompt=True, tools=self.tools)
            delta = _suffix(hist_text, after, "feedback message")
        except TemplatePrefixError as e:
            self.prefix_breaks.append(str(e))
            closing, delta, after = self._local_delta(action, messages)
        self._append_closing(closing, ended, delta)
        self.messages, self.text, self._open = with_fb, after, None

    def finish(self) -> None:
        """Close a final turn that ended without the end-of-turn token (ids only, mask 0)."""
        if self._open is not None and not self._open[1] and self.tokenizer.eos_token_id is not None:
            self._append([self.tokenizer.eos_token_id])
        if self._open is not None:
            self.messages = [*self.messages, {"role": "assistant", "content": self._open[0]}]
        self._open = None

    # ---- internals ------------------------------------------------------------------------
    def _closing(self, history: list[dict[str, Any]], action: str) -> tuple[str, str]:
        """Text the template puts after the assistant content (e.g. ``<|im_end|>\\n``)."""
        hist_text = render(self.tokenizer, history, generation_prompt=False, tools=self.tools)
        turn = _suffix(self.text, hist_text, "assistant message")
        if not turn.startswith(action):
            raise TemplatePrefixError(
                f"assistant message: the template changes the content {action[:40]!r} "
                f"(renders {turn[:40]!r})"
            )
        return turn[len(action):], hist_text

    def _local_delta(self, action: str, messages: list[dict[str, Any]]) -> tuple[str, str, str]:
        """Fallback: the assistant closing and the messages' delta, each from a minimal chat."""
        base = [{"role": "user", "content": "."}]
        r = lambda msgs, gen: render(self.tokenizer, msgs, generation_prompt=gen, tools=self.tools)  # noqa: E731
        turn = _suffix(r(base, True), r([*base, {"role": "assistant", "content": action}], False),
                       "assistant message (minimal chat)")
        if not turn.startswith(action):
            raise TemplatePrefixError("assistant message: the template rewrites assistant content")
        delta = _suffix(r(base, False), r([*base, *messages], True), "feedback message (minimal chat)")
        return turn[len(action):], delta, self.text + turn + delta

    def _append_closing(self, closing: str, ended_with_eos: bool, delta: str) -> None:
        if ended_with_eos and self._eos_text and closing.startswith(self._eos_text):
            closing = closing[len(self._eos_text):]
        self._append(encode(self.tokenizer, closing + delta))

    def _append(self, ids: list[int]) -> None:
        self.token_ids += ids
        self.loss_mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)


def _suffix(before: str, after: str, what: str) -> str:
    if not after.startswith(before):
        i = next((k for k, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), min(len(before), len(after)))
        raise TemplatePrefixError(
            f"{what}: the chat template breaks the prefix property at character {i}: "
            f"{before[max(0, i - 20):i + 20]!r} became {after[max(0, i - 20):i + 20]!r}"
        )
    return after[len(before):]


def check_prefix_property(tokenizer: Any, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]] | None = None) -> list[str]:
    """Where rendering ``messages`` one at a time is not append-only (empty list: it always is).

    For every prefix of the conversation, the rendering (with a generation prompt before each
    assistant message) must be a prefix of the rendering of the longer conversation.
    """
    problems = []
    for i in range(1, len(messages)):
        gen = messages[i]["role"] == "assistant"
        before = render(tokenizer, messages[:i], generation_prompt=gen, tools=tools)
        after = render(tokenizer, messages[: i + 1], generation_prompt=False, tools=tools)
        try:
            _suffix(before, after, f"message {i} ({messages[i]['role']})")
        except TemplatePrefixError as e:
            problems.append(str(e))
    return problems
