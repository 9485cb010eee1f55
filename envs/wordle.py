"""Wordle: find a hidden five-letter word from letter-by-letter feedback.

After each guess the environment says, for every letter, whether it is in the right place
(``G``), in the word but elsewhere (``Y``) or not in the word (``-``), with the standard rule for
repeated letters, then sums up what is known so far. Any five letters count as a guess (there is
no "not in word list" rejection, so a small model is never stuck), but the hidden word is always
drawn from the ~1,200 common words in ``envs/data/wordle_words.txt``.

Components (per step; the episode's value is their sum):
    solved      1.0 on the step that names the word.
    progress    growth of the best letter score so far, where a guess scores (greens + yellows / 2)
                / 5: potential-based, so the episode's sum is the best guess's score (1.0 when
                solved) whatever the number of turns.
    format      0 for a bare five-letter word, -0.5/max_turns for one found inside other text,
                -1/max_turns when no five-letter word can be read (a penalty: solving faster
                never loses format credit).
    turns_used  1.0 per step (weight -0.02: a small price on every extra guess).

Example episode (hidden word "plant")::

    task     "Guess the secret five-letter English word in 6 tries. ..."
    action   "crane"               -> "Guess 1: CRANE  pattern - - G G -
                                       C: not in the word
                                       R: not in the word
                                       A: correct, position 3
                                       N: correct, position 4
                                       E: not in the word
                                       Known: _ _ A N _ ..."           progress=0.4
    action   "My guess is SLANT"   -> "Guess 2: SLANT  pattern - G G G G ... (Reply with just the
                                       word, no other words.)"          progress=0.4
    action   "plant"               -> "Correct! The word was PLANT."    solved=1, progress=0.2
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from agentrl.env import StepResult, TextEnv, register_env

WORD_LENGTH = 5
WORDS_FILE = Path(__file__).parent / "data" / "wordle_words.txt"
OPENER = "slate"  # the scripted policy's first guess
_LEGEND = "G = right letter, right place; Y = in the word, wrong place; - = not in the word"


@cache
def word_list() -> tuple[str, ...]:
    """The hidden-word list shipped with the package (lower case, sorted, unique)."""
    words = WORDS_FILE.read_text(encoding="utf-8").split()
    return tuple(sorted({w.lower() for w in words if len(w) == WORD_LENGTH and w.isalpha()}))


def score_guess(guess: str, target: str) -> str:
    """Wordle colours as a string over ``G``/``Y``/``-`` (repeated letters handled as in Wordle).

    Example:
        >>> score_guess("eerie", "there")
        'Y-Y-G'
    """
    pattern = ["-"] * len(guess)
    unmatched = Counter(t for g, t in zip(guess, target, strict=True) if g != t)
    for i, (g, t) in enumerate(zip(guess, target, strict=True)):
        if g == t:
            pattern[i] = "G"
        elif unmatched[g] > 0:
            pattern[i] = "Y"
            unmatched[g] -= 1
    return "".join(pattern)


def parse_guess(text: str, known: frozenset[str] = frozenset()) -> tuple[str | None, float]:
    """Return (guess, format score): 1.0 for a bare word, 0.5 for one found inside other text.

    Inside other text, the last upper-case five-letter word wins ("I guess CRANE"), then the last
    word from ``known``, then the last five-letter word of any kind.
    """
    bare = text.strip().strip(".!?\"'`*").strip()
    if re.fullmatch(rf"[A-Za-z]{{{WORD_LENGTH}}}", bare):
        return bare.lower(), 1.0
    tokens = [t for t in re.findall(r"[A-Za-z]+", text) if len(t) == WORD_LENGTH]
    for pick in (lambda t: t.isupper(), lambda t: t.lower() in known, lambda t: True):
        chosen = [t for t in tokens if pick(t)]
        if chosen:
            return chosen[-1].lower(), 0.5
    return None, 0.0


def _letter_line(i: int, letter: str, mark: str, target: str) -> str:
    up = letter.upper()
    if mark == "G":
        return f"{up}: correct, position {i + 1}"
    if mark == "Y":
        return f"{up}: in the word, but not in position {i + 1}"
    if letter in target:
        return f"{up}: no more {up}s in the word"
    return f"{up}: not in the word"


class Wordle(TextEnv):
    """Guess a hidden five-letter word in six tries; feedback colours every letter."""

    reward_weights: ClassVar[dict[str, float]] = {
        "solved": 1.0,
        "progress": 0.5,
        "format": 0.5,
        "turns_used": -0.02,
    }
    max_turns = 6
    system_prompt = (
        "You are playing Wordle. Each turn, reply with one five-letter English word and nothing "
        "else."
    )

    def __init__(self, words: list[str] | None = None, **kwargs: Any) -> None:
        """Args:
        words: hidden-word candidates (default: the shipped list); each must be five letters.
        **kwargs: ``max_turns``, ``reward_weights``, ``render_mode`` (see ``TextEnv``).
        """
        if words is not None:
            bad = [w for w in words if not (isinstance(w, str) and len(w) == 5 and w.isalpha())]
            if bad or not words:
                raise ValueError(
                    f"words: need a non-empty list of five-letter words, bad: {bad[:5]}"
                )
        super().__init__(**kwargs)
        self.words = tuple(sorted({w.lower() for w in words})) if words else word_list()
        self._known = frozenset(self.words)
        self.target = self.words[0]
        self.guesses: list[tuple[str, str]] = []  # (guess, pattern)
        self.best = 0.0

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        word = (options or {}).get("word")
        if word is not None:
            if not (isinstance(word, str) and len(word) == WORD_LENGTH and word.isalpha()):
                raise ValueError(f"options['word'] must be a five-letter word, got {word!r}")
            self.target = word.lower()
        else:
            self.target = self.words[int(self.np_random.integers(len(self.words)))]
        self.guesses, self.best = [], 0.0
        return (
            f"Guess the secret five-letter English word in {self.max_turns} tries. After each "
            "guess I tell you, letter by letter, which letters are in the word and whether they "
            f"are in the right place ({_LEGEND}). Reply with just one five-letter word, for "
            "example: crane"
        )

    def _score(self, action: str) -> StepResult:
        guess, fmt = parse_guess(action, self._known)
        components = {
            "format": (fmt - 1.0) / self.max_turns,
            "turns_used": 1.0,
            "solved": 0.0,
            "progress": 0.0,
        }
        if guess is None:
            shown = action.strip()[:80]
            return StepResult(
                f"I could not find a five-letter word in your reply {shown!r}. Reply with just "
                "one five-letter word, for example: crane",
                components,
            )
        pattern = score_guess(guess, self.target)
        self.guesses.append((guess, pattern))
        value = (pattern.count("G") + 0.5 * pattern.count("Y")) / WORD_LENGTH
        components["progress"] = max(0.0, value - self.best)
        self.best = max(self.best, value)
        if guess == self.target:
            components["solved"] = 1.0
            return StepResult(f"Correct! The word was {self.target.upper()}.", components, True)
        return StepResult(self._feedback(guess, pattern, fmt), components)

    def _feedback(self, guess: str, pattern: str, fmt: float) -> str:
        n = self.turn + 1  # this step's number (unreadable replies use up turns too)
        lines = [f"Guess {n}: {guess.upper()}  pattern {' '.join(pattern)}"]
        lines += [
            _letter_line(i, g, m, self.target)
            for i, (g, m) in enumerate(zip(guess, pattern, strict=True))
        ]
        if sum(g == guess for g, _ in self.guesses) > 1:
            lines.append(f"You already guessed {guess.upper()}; try a new word.")
        lines.append(self._summary())
        left = self.max_turns - n
        if left > 0:
            lines.append(f"{left} {'guess' if left == 1 else 'guesses'} left.")
        else:
            lines.append(f"No guesses left. The word was {self.target.upper()}.")
        if fmt < 1.0:
            lines.append("(Reply with just the word, no other words.)")
        return "\n".join(lines)

    def _summary(self) -> str:
        placed = ["_"] * WORD_LENGTH
        present: set[str] = set()
        absent: set[str] = set()
        for guess, pattern in self.guesses:
            for i, (g, m) in enumerate(zip(guess, pattern, strict=True)):
                if m == "G":
                    placed[i] = g.upper()
                elif m == "Y":
                    present.add(g.upper())
                elif g not in self.target:
                    absent.add(g.upper())
        present -= {p for p in placed if p != "_"}
        return (
            f"Known: {' '.join(placed)}; also in the word: {' '.join(sorted(present)) or '-'}; "
            f"not in the word: {' '.join(sorted(absent)) or '-'}."
        )

    def candidates(self) -> list[str]:
        """Words from the list still consistent with every pattern seen so far."""
        return [w for w in self.words if all(score_guess(g, w) == p for g, p in self.guesses)]

    def scripted_action(self) -> str:
        """A fixed opener, then the consistent word whose worst-case pattern bucket is smallest."""
        if not self.guesses:
            return OPENER
        pool = self.candidates() or [self.target]
        if len(pool) <= 2:
            return pool[0]
        guesses = pool if len(pool) > 40 else self.words

        def worst(g: str) -> tuple[int, bool, str]:
            buckets = Counter(score_guess(g, w) for w in pool)
            return max(buckets.values()), g not in pool, g

        return min(guesses, key=worst)


register_env(
    "Wordle",
    "agentrl.envs.wordle:Wordle",
    components=Wordle.reward_weights,
    description="Find a hidden five-letter word from letter-by-letter colour feedback (6 tries).",
)
