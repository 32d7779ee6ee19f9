"""The server through the official `openai` Python client: chat and completions, streaming and not,
sampling fields, usage, and errors as the SDK's typed exceptions."""
from __future__ import annotations

import threading

import pytest

openai = pytest.importorskip("openai")

import srvutil  # noqa: E402
from conftest import require_tiny, start_server, stop_and_check, tiny_args  # noqa: E402
from srvutil import API_KEY, TINY_NAME, openai_client, post_json  # noqa: E402

pytestmark = pytest.mark.timeout(int(180 * srvutil.TIME_SCALE))

PROMPT = "It is a truth universally acknowledged"
CHAT = [{"role": "user", "content": "In the beginning"}]


def tokenize(base: str, text: str, add_special_tokens: bool = True) -> list[int]:
    st, _, body, raw = post_json(base, "/tokenize", {"model": TINY_NAME, "prompt": text,
                                                     "add_special_tokens": add_special_tokens})
    assert st == 200, raw
    assert body["count"] == len(body["tokens"]), body
    return body["tokens"]


def check_usage(usage, max_completion: int | None = None):
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens >= 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if max_completion is not None:
        assert usage.completion_tokens <= max_completion


# ---- models -------------------------------------------------------------------------------------

def test_models_list(client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [TINY_NAME]
    assert models.data[0].object == "model"


# ---- completions --------------------------------------------------------------------------------

def test_completion_fields_and_usage(client, base):
    r = client.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=12, temperature=0)
    assert r.object == "text_completion"
    assert r.model == TINY_NAME
    assert r.id and r.created > 0
    assert len(r.choices) == 1 and r.choices[0].index == 0
    assert r.choices[0].finish_reason in ("stop", "length")
    check_usage(r.usage, 12)
    # Completions tokenize the prompt like /tokenize does (special tokens added).
    assert r.usage.prompt_tokens == len(tokenize(base, PROMPT))
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == 12


def test_completion_max_tokens_gives_length(client):
    r = client.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=5, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    assert r.choices[0].text


def test_completion_token_id_prompt_equals_text_prompt(client, base):
    ids = tokenize(base, PROMPT)
    a = client.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=8, temperature=0,
                                  extra_body={"ignore_eos": True})
    b = client.completions.create(model=TINY_NAME, prompt=ids, max_tokens=8, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert b.choices[0].text == a.choices[0].text
    assert b.usage.prompt_tokens == len(ids)


def test_completion_list_of_prompts(client):
    prompts = [PROMPT, "In the beginning God created"]
    r = client.completions.create(model=TINY_NAME, prompt=prompts, max_tokens=6, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1]
    for i, p in enumerate(prompts):
        alone = client.completions.create(model=TINY_NAME, prompt=p, max_tokens=6, temperature=0,
                                          extra_body={"ignore_eos": True})
        got = next(c for c in r.choices if c.index == i)
        assert got.text == alone.choices[0].text
    assert r.usage.completion_tokens == 12


def test_completion_echo(client):
    r = client.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=4, temperature=0, echo=True,
                                  extra_body={"ignore_eos": True})
    plain = client.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=4, temperature=0,
                                      extra_body={"ignore_eos": True})
    assert r.choices[0].text == PROMPT + plain.choices[0].text


def test_completion_streaming_equals_non_streaming(client):
    kw = dict(model=TINY_NAME, prompt=PROMPT, max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    full = client.completions.create(**kw)
    pieces, finish = [], []
    for chunk in client.completions.create(stream=True, **kw):
        assert chunk.object == "text_completion"
        for c in chunk.choices:
            pieces.append(c.text or "")
            if c.finish_reason:
                finish.append(c.finish_reason)
    assert "".join(pieces) == full.choices[0].text
    assert finish == ["length"]


def test_completion_stop_string(client):
    kw = dict(model=TINY_NAME, prompt=PROMPT, max_tokens=32, temperature=0, extra_body={"ignore_eos": True})
    text = client.completions.create(**kw).choices[0].text
    # A stop string from the second half of the greedy text: the output ends before its first
    # occurrence and does not include it.
    stop = None
    for k in range(len(text) // 2, len(text) - 2):
        cand = text[k:k + 3]
        if cand.strip() and text.find(cand) > 0:
            stop = cand
            break
    if stop is None:
        pytest.fail(f"greedy text has no usable stop string: {text!r}")
    r = client.completions.create(stop=[stop, "\x00never"], **kw)
    assert r.choices[0].text == text[:text.find(stop)]
    assert r.choices[0].finish_reason == "stop"
    # The same through streaming.
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, stop=stop, **kw)
                       if c.choices)
    assert streamed == text[:text.find(stop)]


def test_completion_seed_reproducible(client):
    kw = dict(model=TINY_NAME, prompt=PROMPT, max_tokens=16, temperature=1.0, extra_body={"ignore_eos": True})
    a = client.completions.create(seed=1234, **kw).choices[0].text
    b = client.completions.create(seed=1234, **kw).choices[0].text
    assert a == b
    others = {client.completions.create(seed=s, **kw).choices[0].text for s in (1, 2, 3)}
    assert len(others | {a}) > 1, "different seeds all gave the same sampled text"


def test_completion_n_choices(client):
    r = client.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=8, temperature=1.0, n=3, seed=7,
                                  extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert r.usage.completion_tokens == 24
    # The prompt is counted once, as OpenAI does.
    single = client.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=1, temperature=0)
    assert r.usage.prompt_tokens == single.usage.prompt_tokens


def test_completion_n_streaming(client):
    seen, finish = {}, {}
    for chunk in client.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=6, temperature=0.8,
                                           n=2, seed=3, stream=True, extra_body={"ignore_eos": True}):
        for c in chunk.choices:
            seen[c.index] = seen.get(c.index, "") + (c.text or "")
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert sorted(seen) == [0, 1]
    assert finish == {0: "length", 1: "length"}


def test_completion_logprobs(client):
    r = client.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert lp is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == r.choices[0].text
    for tok, tlp, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert tlp <= 0.0
        assert 3 <= len(top) <= 4, top
        # Greedy: the sampled token is the most likely one.
        assert tlp == pytest.approx(max(top.values()), abs=1e-4)
        assert all(v <= 0.0 for v in top.values())


def test_completion_usage_chunk(client):
    kw = dict(model=TINY_NAME, prompt=PROMPT, max_tokens=7, temperature=0, extra_body={"ignore_eos": True})
    full = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == \
        (full.usage.prompt_tokens, 7, full.usage.prompt_tokens + 7)
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize("char", ["é", "中"])
def test_stream_deltas_never_split_utf8(client, base, char):
    # Bias the byte-level tokens of one multi-byte character up (the frequency penalty makes them
    # alternate), so the output is made of UTF-8 pieces: a delta must never end inside a character.
    ids = tokenize(base, char, add_special_tokens=False)
    assert len(ids) >= 2, f"{char!r} is one token here; the test needs byte tokens"
    kw = dict(model=TINY_NAME, prompt="Hello", max_tokens=12, temperature=0, frequency_penalty=2.0,
              logit_bias={str(i): 100 for i in ids}, extra_body={"ignore_eos": True})
    text = client.completions.create(**kw).choices[0].text
    assert char in text, f"the biased output has no complete {char!r}: {text!r}"
    deltas = [c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices]
    assert "".join(deltas) == text
    for d in deltas:
        # Every complete character of the text arrives whole: no delta carries a piece of it.
        assert d.count("\ufffd") <= text.count("\ufffd")
    assert sum(d.count(char) for d in deltas) == text.count(char)


# ---- chat ---------------------------------------------------------------------------------------

def test_chat_fields_and_usage(client, base):
    r = client.chat.completions.create(model=TINY_NAME, messages=CHAT, max_tokens=10, temperature=0)
    assert r.object == "chat.completion"
    assert r.model == TINY_NAME
    msg = r.choices[0].message
    assert msg.role == "assistant"
    assert isinstance(msg.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    check_usage(r.usage, 10)
    # Chat renders the model's template, then tokenizes without adding special tokens.
    assert r.usage.prompt_tokens == len(tokenize(base, srvutil.chatml(CHAT), add_special_tokens=False))


def test_chat_content_parts(client, base):
    kw = dict(model=TINY_NAME, max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
    one = [{"role": "user", "content": [{"type": "text", "text": "In the beginning"}]}]
    a = client.chat.completions.create(messages=one, **kw)
    b = client.chat.completions.create(messages=CHAT, **kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    # Several text parts are joined with "\n" (vLLM's convention).
    two = [{"role": "user", "content": [{"type": "text", "text": "In the"}, {"type": "text", "text": "beginning"}]}]
    r = client.chat.completions.create(messages=two, **kw)
    joined = srvutil.chatml([{"role": "user", "content": "In the\nbeginning"}])
    assert r.usage.prompt_tokens == len(tokenize(base, joined, add_special_tokens=False))


def test_chat_max_completion_tokens(client):
    r = client.chat.completions.create(model=TINY_NAME, messages=CHAT, max_completion_tokens=3, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_chat_streaming_shape_and_equality(client):
    kw = dict(model=TINY_NAME, messages=CHAT, max_tokens=20, temperature=0, extra_body={"ignore_eos": True})
    full = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    choice_chunks = [c for c in chunks if c.choices]
    # First delta carries the role; later ones content; the last choice chunk the finish_reason.
    assert choice_chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role in (None, "assistant") for c in choice_chunks)
    assert [c.choices[0].finish_reason for c in choice_chunks[:-1]] == [None] * (len(choice_chunks) - 1)
    assert choice_chunks[-1].choices[0].finish_reason == "length"
    text = "".join(c.choices[0].delta.content or "" for c in choice_chunks)
    assert text == full.choices[0].message.content
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == 20
    assert usage.usage.prompt_tokens == full.usage.prompt_tokens
    assert usage.usage.total_tokens == full.usage.total_tokens


def test_chat_n_and_seed(client):
    kw = dict(model=TINY_NAME, messages=CHAT, max_tokens=10, temperature=1.0, n=2, seed=99,
              extra_body={"ignore_eos": True})
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert sorted(c.index for c in a.choices) == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.usage.completion_tokens == 20


def test_chat_stop(client):
    kw = dict(model=TINY_NAME, messages=CHAT, max_tokens=32, temperature=0, extra_body={"ignore_eos": True})
    text = client.chat.completions.create(**kw).choices[0].message.content
    stop = next((text[k:k + 2] for k in range(len(text) // 2, len(text) - 1)
                 if text[k:k + 2].strip() and text.find(text[k:k + 2]) > 0), None)
    if stop is None:
        pytest.fail(f"greedy chat text has no usable stop string: {text!r}")
    r = client.chat.completions.create(stop=stop, **kw)
    assert r.choices[0].message.content == text[:text.find(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=TINY_NAME, messages=CHAT, max_tokens=5, temperature=0, logprobs=True,
                                       top_logprobs=2, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0.0
        assert len(t.top_logprobs) == 2
        assert t.logprob == pytest.approx(max(a.logprob for a in t.top_logprobs), abs=1e-4)
    if all(t.bytes is not None for t in content):
        assert b"".join(bytes(t.bytes) for t in content).decode() == r.choices[0].message.content


def test_real_chat_answer_smollm2(smol_server):
    c = openai_client(smol_server.base)
    r = c.chat.completions.create(model="smollm2", messages=[{"role": "user",
                                                              "content": "What is the capital of France?"}],
                                  max_tokens=24, temperature=0)
    assert "Paris" in r.choices[0].message.content, r.choices[0].message.content


# ---- errors as typed exceptions -----------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(temperature=-1.0),
    dict(top_p=1.5),
    dict(n=0),
    dict(max_tokens=-3),
    dict(presence_penalty=5.0),
    dict(logprobs=True, top_logprobs=1000),
], ids=lambda kw: ",".join(kw))
def test_chat_bad_values_are_400(client, kw):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=TINY_NAME, messages=CHAT, **kw)
    assert e.value.status_code == 400
    assert e.value.type == "invalid_request_error"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=CHAT, max_tokens=2)
    assert e.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)


def test_context_length_exceeded(client, base):
    long_prompt = "and it came to pass " * 400  # well over --max-model-len 1024 tokens
    assert len(tokenize(base, long_prompt)) > 1024
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=TINY_NAME, prompt=long_prompt, max_tokens=4)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": long_prompt}],
                                       max_tokens=4)
    assert e.value.code == "context_length_exceeded"
    # The prompt fits but prompt + max_tokens does not.
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=1020)
    assert e.value.code == "context_length_exceeded"


def test_body_over_default_limit_is_413(client):
    # --max-body-bytes defaults to 8 MiB.
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(model=TINY_NAME, prompt="a" * (9 << 20), max_tokens=1)
    assert e.value.status_code == 413


def test_api_key(auth_server):
    good = openai_client(auth_server.base, api_key=API_KEY)
    assert good.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=2).usage.completion_tokens <= 2
    bad = openai_client(auth_server.base, api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=TINY_NAME, messages=CHAT, max_tokens=2)
    assert e.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    # A key that is a prefix of the right one is still wrong.
    with pytest.raises(openai.AuthenticationError):
        openai_client(auth_server.base, api_key=API_KEY[:-1]).models.list()


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory):
    require_tiny()
    srv = start_server(tmp_path_factory, "queue1", tiny_args("--max-num-seqs", "1", "--max-queued-requests", "1"))
    yield srv
    stop_and_check(srv)


def test_queue_full_is_429(queue_server):
    c = openai_client(queue_server.base)
    results: list = [None] * 8
    go = threading.Barrier(len(results))

    def one(i):
        go.wait()
        try:
            r = c.completions.create(model=TINY_NAME, prompt=PROMPT, max_tokens=300, temperature=0,
                                     extra_body={"ignore_eos": True})
            results[i] = r.usage.completion_tokens
        except openai.RateLimitError as e:
            results[i] = e
        except Exception as e:  # noqa: BLE001 - any other outcome is a failure, reported below
            results[i] = repr(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    done = [r for r in results if r == 300]
    # One running + one queued fit; the rest are turned away at once.
    assert len(limited) >= 1 and len(done) >= 1, results
    assert len(limited) + len(done) == len(results), results
    assert all(e.status_code == 429 for e in limited)
    srvutil.assert_serving(queue_server.base)
