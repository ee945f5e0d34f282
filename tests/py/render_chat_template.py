"""Reference renderer for chat templates: Jinja2 configured as transformers' `apply_chat_template` configures
it (sandboxed environment, trim_blocks, lstrip_blocks, loop controls, `raise_exception`, a `tojson` without
HTML escaping, `strftime_now`). Reads a JSON list of cases {template, messages, bos_token, eos_token} on
stdin and prints a JSON list of {"text": …} or {"error": …}.
"""
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

out = []
for case in json.load(sys.stdin):
    try:
        t = env.from_string(case["template"])
        out.append({"text": t.render(messages=case["messages"], add_generation_prompt=True,
                                     bos_token=case["bos_token"], eos_token=case["eos_token"])})
    except Exception as e:  # the Rust side only compares "failed" with "failed"
        out.append({"error": f"{type(e).__name__}: {e}"})
print(json.dumps(out))
