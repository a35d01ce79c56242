#!/usr/bin/env python3
"""Renders chat templates with jinja2 as transformers' apply_chat_template does, for
tests/test-chat.cpp: the reference its native renderings must equal.

usage: chat-template-render.py CASES.json OUT.json
CASES.json: [{"template": "...", "messages": [{"role": ..., "content": ...}], "bos_token": "<s>",
              "eos_token": "</s>", "add_generation_prompt": true, "date": "05 Dec 2026"}, ...]
OUT.json:   [{"text": "..."} or {"error": "..."}, ...] in the same order. strftime_now returns
"date" (the C++ side is given the same date), whatever the format asked for.
"""
import json
import sys

from jinja2.exceptions import TemplateError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class Generation(Extension):
    """{% generation %}...{% endgeneration %} (transformers marks the assistant's text with it):
    renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def raise_exception(message):
    raise TemplateError(message)


def render(case):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", Generation])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(x, indent=indent, ensure_ascii=ensure_ascii)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: case["date"]
    template = env.from_string(case["template"])
    try:
        # As transformers: tools and documents are always passed (None without them).
        return {"text": template.render(messages=case["messages"], tools=None, documents=None,
                                        bos_token=case["bos_token"], eos_token=case["eos_token"],
                                        add_generation_prompt=case["add_generation_prompt"])}
    except TemplateError as e:
        return {"error": str(e)}


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump([render(c) for c in cases], f, ensure_ascii=False)


if __name__ == "__main__":
    main()
