"""Task prompts wrapped in the LLM's own chat template, with the audio placed where SALMONN puts it, and
the token that ends an assistant turn found from the template itself so generation stops for every family."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

AUDIO_SLOT = "<AudioHere>"
_PROBE = "zqxj"  # an answer no template contains, to find what the template writes after an answer


@dataclass(frozen=True)
class TaskPrompt:
    prefix_ids: list[int]
    suffix_ids: list[int]


class PromptBuilder:
    """Token ids around the audio embeddings, per task, and the answer/stop tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompts: dict[str, str], template: str | None = None) -> None:
        if tokenizer.chat_template is None and template is None:
            raise ValueError("the LLM's tokenizer has no chat template: set llm.prompt_template "
                             f"(a string with {{prompt}} where the user turn goes, e.g. 'USER: {{prompt}} ASSISTANT:')")
        for task, text in prompts.items():
            if AUDIO_SLOT not in text:
                raise ValueError(f"prompts.{task} must contain {AUDIO_SLOT} where the audio goes, got {text!r}")
        self.tokenizer = tokenizer
        self.prompts = dict(prompts)
        self.template = template
        self.tasks = {task: self._split(text) for task, text in prompts.items()}
        self.end_of_turn_id = self._end_of_turn()
        stops = {self.end_of_turn_id}
        if tokenizer.eos_token_id is not None:
            stops.add(int(tokenizer.eos_token_id))
        self.stop_ids = sorted(stops)

    def _render(self, user: str, answer: str | None = None) -> str:
        if self.template is not None:
            text = self.template.format(prompt=user)
            return text if answer is None else f"{text} {answer}"
        messages = [{"role": "user", "content": user}]
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=answer is None)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _split(self, prompt: str) -> TaskPrompt:
        before, after = self._render(prompt).split(AUDIO_SLOT)
        return TaskPrompt(self._encode(before), self._encode(after))

    def _end_of_turn(self) -> int:
        if self.template is None:
            tail = self._render("hi", _PROBE).split(_PROBE, 1)[1]
            special = set(self.tokenizer.all_special_ids) | set(self.tokenizer.added_tokens_decoder)
            for tok in self._encode(tail):
                if tok in special:
                    return int(tok)
        if self.tokenizer.eos_token_id is None:
            raise ValueError("cannot tell where an answer ends: the tokenizer has no eos token and its chat "
                             "template writes no special token after an answer")
        return int(self.tokenizer.eos_token_id)

    def answer_ids(self, text: str) -> list[int]:
        """Answer tokens plus the end-of-turn token, so the model learns to stop."""
        return self._encode(text.strip()) + [self.end_of_turn_id]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
