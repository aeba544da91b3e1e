"""Vibe checks: a fixed list of prompts, continued at every evaluation point and logged as text.

Numbers miss what a glance at a few completions shows at once (repetition, broken tokenization, a model
that only ever writes newlines), so the same prompts are continued at every stop point and logged next to
the metrics, where they can be read in order of training step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from training.generate import GenerationConfig, generate


@dataclass
class VibeConfig:
    prompts: list[str] = field(default_factory=list)
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    stop_sequences: list[str] = field(default_factory=list)
    seed: int = 0


def run_vibe_checks(model, tokenizer, config: VibeConfig) -> list[dict]:
    """[{"prompt", "completion", "finish_reason"}] for each configured prompt, in order."""
    if not config.prompts:
        return []
    generation = GenerationConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                  top_k=config.top_k, top_p=config.top_p, stop_sequences=list(config.stop_sequences),
                                  seed=config.seed)
    return [{"prompt": g.prompt, "completion": g.text, "finish_reason": g.finish_reason}
            for g in generate(model, tokenizer, config.prompts, generation)]
