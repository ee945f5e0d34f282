"""Checks `meddr serve` from outside, as its users call it: with the real `openai` Python client, with raw
HTTP for the edge cases the client hides, under 100 concurrent requests, and with clients that vanish.

Expected answers come from `meddr run --json` on the same model (the CLI's single-question path), written by
the Rust test into EXPECT (JSON); the chat template is rendered here from upstream's `conversation.py` rules
and the file's own system message (read with gguf-py), independently of the server's renderer.

usage: openai_server.py SECTION --base-url URL --api-key KEY [--expect FILE] [--model GGUF] [--image FILE]
       [--log SERVER_STDERR] [--queue N]
SECTION: client | raw | load | disconnect | prefill_disconnect | queue | slow | plain | context
Exits 1 with the failed check's message.
"""
import argparse
import base64
import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse

import openai
from openai import OpenAI


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def system_message(model_path):
    from gguf import GGUFReader

    r = GGUFReader(model_path)
    f = r.fields["meddr.chat.system_message"]
    return bytes(f.parts[f.data[0]]).decode()


def hermes2(system, history, question):
    """Upstream's Hermes-2 template (conversation.py, SeparatorStyle.MPT, sep '<|im_end|>')."""
    p = f"<|im_start|>system\n{system}<|im_end|>"
    for q, a in history:
        p += f"<|im_start|>user\n{q}<|im_end|><|im_start|>assistant\n{a}<|im_end|>"
    return p + f"<|im_start|>user\n{question}<|im_end|><|im_start|>assistant\n"


def data_url(path):
    kind = "png" if path.endswith(".png") else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(open(path, "rb").read()).decode()


# ---------------------------------------------------------------------------------------------- client
def section_client(a):
    exp = json.load(open(a.expect))
    c = OpenAI(base_url=a.base_url + "/v1", api_key=a.api_key, max_retries=0)
    q, n = exp["question"], exp["max_tokens"]
    text = exp["text"]["text"]

    models = c.models.list()
    check(len(models.data) == 1, f"one model listed: {models}")
    model = models.data[0].id
    check(c.models.retrieve(model).id == model, "retrieve the model by id")
    try:
        c.models.retrieve("gpt-4o")
        check(False, "an unknown model id was found")
    except openai.NotFoundError as e:
        check(e.status_code == 404, f"404 for an unknown model: {e}")

    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], max_tokens=n)
    check(r.choices[0].message.content == text, f"chat text {r.choices[0].message.content!r} != meddr run's {text!r}")
    check(r.usage.prompt_tokens == exp["text"]["prompt_tokens"], f"prompt tokens {r.usage.prompt_tokens} != {exp['text']['prompt_tokens']}")
    check(r.usage.completion_tokens == len(exp["text"]["tokens"]), f"completion tokens {r.usage}")
    want_finish = "length" if exp["text"]["stop_reason"] == "max_tokens" else "stop"
    check(r.choices[0].finish_reason == want_finish, f"finish_reason {r.choices[0].finish_reason} != {want_finish}")
    check(r.model_extra.get("meta", {}).get("notice", "").startswith("Research aid"), f"notice in metadata: {r.model_extra}")

    # max_completion_tokens wins over max_tokens (a runaway answer is what users complain about).
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], max_tokens=n, max_completion_tokens=2)
    check(r.usage.completion_tokens == 2 and r.choices[0].finish_reason == "length", f"max_completion_tokens honoured: {r.usage}")

    # Streaming with usage: deltas add up to the same text; only the last chunk has usage.
    chunks = list(c.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], max_tokens=n,
                                            stream=True, stream_options={"include_usage": True}))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check(streamed == text, f"streamed text {streamed!r} != {text!r}")
    check(chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(exp["text"]["tokens"]), f"usage chunk last: {chunks[-1]}")
    check(all(ch.usage is None for ch in chunks[:-1]), "usage only in the last chunk")
    check(chunks[0].choices[0].delta.role == "assistant", "first delta names the role")
    check([ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == want_finish, "finish_reason in the stream")

    # An image question: the same answer as `meddr run --image`.
    r = c.chat.completions.create(model=model, max_tokens=n, messages=[{"role": "user", "content": [
        {"type": "text", "text": q}, {"type": "image_url", "image_url": {"url": data_url(a.image)}}]}])
    check(r.choices[0].message.content == exp["image"]["text"], f"image answer {r.choices[0].message.content!r} != {exp['image']['text']!r}")
    check(r.usage.prompt_tokens == exp["image"]["prompt_tokens"], f"image prompt tokens {r.usage.prompt_tokens}")
    # The same image again, now with a follow-up turn: the history is upstream's, image in the first turn.
    q2 = "And the left side?"
    a1 = exp["image"]["text"].strip()
    r2 = c.chat.completions.create(model=model, max_tokens=n, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(a.image)}}, {"type": "text", "text": q}]},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": q2}])
    check(r2.usage.prompt_tokens > exp["image"]["prompt_tokens"], "the follow-up prompt holds the history")

    # Log-probabilities in the chat shape, equal to the CLI's.
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], max_tokens=n, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    want = [t for t in exp["logprobs"]["tokens"] if t["text"] != "" or t["id"] not in exp["stop_ids"]]
    check(len(content) == len(want), f"{len(content)} logprob entries, expected {len(want)}")
    for got, w in zip(content, want):
        check(abs(got.logprob - w["logprob"]) < 1e-4, f"logprob {got.logprob} != {w['logprob']}")
        check(len(got.top_logprobs) == 3, "3 alternatives")
        check(abs(got.top_logprobs[0].logprob - w["top_logprobs"][0]["logprob"]) < 1e-4, "best alternative's logprob")
        check(bytes(got.bytes).decode("utf-8", "replace") == got.token or not got.token.isprintable(), f"bytes match token {got}")

    # Raw completion of the template rendered here: the same ids, so the same answer.
    system = system_message(a.model)
    r = c.completions.create(model=model, prompt=hermes2(system, [], q), max_tokens=n)
    check(r.choices[0].text == text, f"completion of the rendered template {r.choices[0].text!r} != {text!r}")
    r = c.completions.create(model=model, prompt=hermes2(system, [], q), max_tokens=3, logprobs=2)
    lp = r.choices[0].logprobs
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 3, f"legacy logprobs shape: {lp}")
    check(abs(lp.token_logprobs[0] - exp["logprobs"]["tokens"][0]["logprob"]) < 1e-4, "completion logprob equals chat's")

    # The chat history renderer equals upstream's rules: chat with history == completion of the rendering.
    hist = [("What is shown?", "A chest radiograph."), ("Any effusion?", "No.")]
    msgs = []
    for hq, ha in hist:
        msgs += [{"role": "user", "content": hq}, {"role": "assistant", "content": ha}]
    msgs.append({"role": "user", "content": q})
    r1 = c.chat.completions.create(model=model, messages=msgs, max_tokens=n)
    r2 = c.completions.create(model=model, prompt=hermes2(system, hist, q), max_tokens=n)
    check(r1.choices[0].message.content == r2.choices[0].text, f"history: chat {r1.choices[0].message.content!r} != completion {r2.choices[0].text!r}")
    check(r1.usage.prompt_tokens == r2.usage.prompt_tokens, "history prompt lengths")
    # A system message replaces the file's.
    r1 = c.chat.completions.create(model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}], max_tokens=n)
    r2 = c.completions.create(model=model, prompt=hermes2("Be brief.", [], q), max_tokens=n)
    check(r1.choices[0].message.content == r2.choices[0].text, "system message")

    # Sampling: the same seed gives the same text.
    kw = dict(model=model, messages=[{"role": "user", "content": q}], max_tokens=n, temperature=1.0, top_p=0.9)
    s1 = c.chat.completions.create(seed=7, **kw).choices[0].message.content
    s2 = c.chat.completions.create(seed=7, **kw).choices[0].message.content
    check(s1 == s2, f"same seed, same text: {s1!r} vs {s2!r}")

    # Stop strings: the answer ends before the first one, finish_reason stop, also across tokens.
    cut = text[3:7]
    check(cut and text.find(cut) == 3, f"usable stop string in {text!r}")
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], max_tokens=n, stop=[cut])
    check(r.choices[0].message.content == text[:3] and r.choices[0].finish_reason == "stop", f"stop {cut!r}: {r.choices[0]}")
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": q}], max_tokens=n, stop=cut, stream=True) if ch.choices)
    check(streamed == text[:3], f"streamed stop {streamed!r}")

    # Errors the client raises as typed exceptions.
    try:
        c.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], temperature=5)
        check(False, "temperature 5 accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "temperature" in str(e), f"400 naming temperature: {e}")
    try:
        OpenAI(base_url=a.base_url + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model=model, messages=[{"role": "user", "content": q}])
        check(False, "wrong key accepted")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, f"401: {e}")
    print("client: all checks passed")


# ------------------------------------------------------------------------------------------------- raw
def request(a, method, path, body=None, headers=None, key=True, raw=None):
    u = urllib.parse.urlparse(a.base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = f"Bearer {a.api_key}"
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    out = r.status, r.read().decode(errors="replace"), dict(r.getheaders())
    conn.close()
    return out


def openai_error(status, body, code, word):
    check(status == code, f"status {status} != {code}: {body[:300]}")
    err = json.loads(body).get("error", {})
    check(set(err) >= {"message", "type", "code"}, f"OpenAI error shape: {body[:300]}")
    check(word.lower() in err["message"].lower(), f"message names {word!r}: {err['message']}")


def section_raw(a):
    q = {"role": "user", "content": "Hello?"}
    chat = "/v1/chat/completions"
    s, b, h = request(a, "GET", "/health", key=False)
    check(s == 200 and json.loads(b)["status"] == "ok", f"health {s} {b}")
    check(h.get("x-meddr-notice", "").startswith("Research aid"), "notice header")
    s, b, _ = request(a, "GET", "/v1/models", key=False)
    check(s == 200, "models without a key")
    openai_error(*request(a, "POST", chat, {"messages": [q]}, key=False)[:2], 401, "API key")
    openai_error(*request(a, "POST", chat, raw=b"{\"messages\": [")[:2], 400, "JSON")
    openai_error(*request(a, "POST", chat, {"messages": "hi"})[:2], 400, "messages")
    openai_error(*request(a, "POST", chat, {"messages": [q], "max_tokens": "5"})[:2], 400, "max_tokens")
    openai_error(*request(a, "POST", chat, {"messages": []})[:2], 400, "messages")
    openai_error(*request(a, "POST", chat, {"messages": [q, {"role": "assistant", "content": "x"}]})[:2], 400, "last message")
    openai_error(*request(a, "POST", chat, {"messages": [{"role": "tool", "content": "x"}]})[:2], 400, "tool")
    openai_error(*request(a, "POST", chat, {"messages": [q], "n": 2})[:2], 400, "n = 2")
    openai_error(*request(a, "POST", chat, {"messages": [q], "stop": ["a", "b", "c", "d", "e"]})[:2], 400, "stop")
    openai_error(*request(a, "POST", chat, {"messages": [q], "max_tokens": 100000})[:2], 400, "max_tokens")
    openai_error(*request(a, "POST", chat, {"messages": [q]}, headers={"Content-Type": None})[:2], 415, "Content-Type")
    # A body over the limit without a declared length (chunked) is cut when it passes the limit.
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (a.max_body_mb * 1024 * 1024 + 10)}]}).encode()
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
    uu = urllib.parse.urlparse(a.base_url)
    conn = http.client.HTTPConnection(uu.hostname, uu.port, timeout=60)
    conn.request("POST", chat, body=chunks, encode_chunked=True,
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {a.api_key}"})
    r = conn.getresponse()
    openai_error(r.status, r.read().decode(), 413, "limit")
    conn.close()
    # A declared size over the limit is refused before the body is sent (no "100 Continue").
    u = urllib.parse.urlparse(a.base_url)
    sk = socket.create_connection((u.hostname, u.port), timeout=10)
    sk.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Expect: 100-continue\r\nContent-Length: 10000000000\r\n\r\n")
    head = read_until(sk, lambda b: b"\r\n\r\n" in b, limit_s=10)
    sk.close()
    check(head.startswith(b"HTTP/1.1 413"), f"declared oversize refused at once: {head[:200]!r}")

    def img(url):
        return {"messages": [{"role": "user", "content": [{"type": "text", "text": "?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    openai_error(*request(a, "POST", chat, img("data:image/png;base64,@@@not-base64@@@"))[:2], 400, "base64")
    openai_error(*request(a, "POST", chat, img("data:image/gif;base64,R0lGODlhAQABAAAAACw="))[:2], 400, "image/gif")
    openai_error(*request(a, "POST", chat, img("https://example.com/x.png"))[:2], 400, "not fetched")
    openai_error(*request(a, "POST", chat, img("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode()))[:2], 400, "image")
    # A 60-byte PNG declaring 9000 x 9000 pixels: refused by its header, before any decoding.
    import struct, zlib
    ihdr = struct.pack(">IIBBBBB", 9000, 9000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    openai_error(*request(a, "POST", chat, img("data:image/png;base64," + base64.b64encode(bomb).decode()))[:2], 400, "67108864 pixels")
    # DICOM as application/dicom (issue 11.1): pydicom's CT_small.dcm (tests/setup.sh) is answered; cut short, it
    # is refused with a message that says so.
    dcm = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../.cache/pydicom-test-files/CT_small.dcm"), "rb").read()
    s, b, _ = request(a, "POST", chat, dict(img("data:application/dicom;base64," + base64.b64encode(dcm).decode()), max_tokens=1))
    check(s == 200, f"a DICOM image is answered: {s} {b[:300]}")
    openai_error(*request(a, "POST", chat, img("data:application/dicom;base64," + base64.b64encode(dcm[:5000]).decode()))[:2], 400, "truncated DICOM")
    two = img(data_url(a.image))
    two["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": data_url(a.image)}})
    openai_error(*request(a, "POST", chat, two)[:2], 400, "one image")
    openai_error(*request(a, "GET", chat)[:2], 405, "not allowed")
    openai_error(*request(a, "POST", "/v1/embeddings", {"input": "x"})[:2], 404, "no route")
    openai_error(*request(a, "POST", "/v1/completions", {"prompt": "a", "echo": True})[:2], 400, "echo")

    s, b, _ = request(a, "POST", chat, {"messages": [q]}, key=False)
    check(json.loads(b)["error"]["code"] == "invalid_api_key", f"OpenAI's code for a missing key: {b}")
    openai_error(*request(a, "POST", chat, {"messages": [{"role": "user", "content": "word " * 5000}]})[:2], 400, "none are left")
    openai_error(*request(a, "POST", chat, {"messages": [{"role": "user"}]})[:2], 400, "needs content")
    openai_error(*request(a, "POST", chat, {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]})[:2], 400, "list of parts")
    openai_error(*request(a, "POST", chat, img("/etc/passwd"))[:2], 400, "not a data: URL")
    s, b, _ = request(a, "POST", "/v1/completions", {"prompt": "<IMG_CONTEXT>", "max_tokens": 1})
    openai_error(s, b, 400, "IMG_CONTEXT")
    check(json.loads(b)["error"]["param"] == "prompt", f"names the prompt: {b}")
    s, b, _ = request(a, "POST", chat, {"messages": [q], "max_tokens": 2, "response_format": {"type": "json_object"}, "tools": [{"type": "function"}]})
    w = json.loads(b)["meta"]["warnings"]
    check(s == 200 and any("response_format" in x for x in w) and any("tools" in x for x in w), f"ignored fields are named: {b[:300]}")
    # Without a seed, sampling differs between requests (OpenAI's behaviour).
    outs = {json.loads(request(a, "POST", chat, {"messages": [q], "max_tokens": 8, "temperature": 1.5, "ignore_eos": True})[1])["choices"][0]["message"]["content"] for _ in range(3)}
    check(len(outs) > 1, f"unseeded sampling varies: {outs}")

    # Unknown fields are ignored; a stream without include_usage has no usage key and ends with [DONE].
    s, b, _ = request(a, "POST", chat, {"messages": [q], "max_tokens": 2, "frobnicate": {"x": 1}, "user": "u1"})
    check(s == 200, f"unknown fields ignored: {s} {b[:200]}")
    s, b, h = request(a, "POST", chat, {"messages": [q], "max_tokens": 3, "stream": True})
    check(s == 200 and h.get("content-type", "").startswith("text/event-stream"), f"stream {s} {h}")
    data = [l[6:] for l in b.split("\n") if l.startswith("data: ")]
    check(data[-1] == "[DONE]", f"stream ends with [DONE]: {data[-2:]}")
    check(all("usage" not in json.loads(d) for d in data[:-1]), "no usage key without include_usage")
    s, b, _ = request(a, "POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 3, "stream": True})
    data = [l[6:] for l in b.split("\n") if l.startswith("data: ")]
    check(s == 200 and data[-1] == "[DONE]" and json.loads(data[0])["object"] == "text_completion", f"completion stream: {data[:2]}")
    print("raw: all checks passed")


# ------------------------------------------------------------------------------------------------ load
def section_load(a):
    prompts = [f"Case {k}: " + "findings " * (k % 9) + "summarise." for k in range(100)]

    def ask(p):
        return request(a, "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": p}], "max_tokens": 3})

    reference = {}
    for p in prompts:
        s, b, _ = ask(p)
        check(s == 200, f"sequential request: {s} {b[:200]}")
        j = json.loads(b)
        reference[p] = (j["choices"][0]["message"]["content"], j["usage"]["prompt_tokens"])
    results = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def worker(i):
        barrier.wait()
        try:
            results[i] = ask(prompts[i])
        except Exception as e:  # a lost request is a failure of the server, reported below
            results[i] = (None, repr(e), {})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = refused = 0
    for p, (s, b, _) in zip(prompts, results):
        if s == 200:
            j = json.loads(b)
            got = (j["choices"][0]["message"]["content"], j["usage"]["prompt_tokens"])
            check(got == reference[p], f"answer for {p!r} mixed up: {got} != {reference[p]}")
            ok += 1
        elif s == 429:
            openai_error(s, b, 429, "busy")
            refused += 1
        else:
            check(False, f"request lost or failed: {s} {b[:300]}")
    check(ok + refused == 100, "every request answered")
    check(ok >= a.queue + 1 and refused >= 1, f"{ok} answered, {refused} refused: the queue of {a.queue} was exercised")
    s, b, _ = request(a, "GET", "/health", key=False)
    check(s == 200 and json.loads(b)["status"] == "ok", f"healthy after the load: {b}")
    print(f"load: 100 concurrent requests in {time.time() - t0:.2f} s: {ok} answered (all equal to the sequential "
          f"answers), {refused} refused with 429; server healthy")


# ----------------------------------------------------------------------------------------- disconnect
def open_stream(a, body):
    u = urllib.parse.urlparse(a.base_url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    payload = json.dumps(body).encode()
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {a.api_key}\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return s


def read_until(sock, pred, limit_s=30):
    buf = b""
    t0 = time.time()
    while not pred(buf):
        check(time.time() - t0 < limit_s, f"timed out waiting; got {buf[-300:]!r}")
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def health(a):
    return json.loads(request(a, "GET", "/health", key=False)[1])


LONG = {"messages": [{"role": "user", "content": "Write a very long report."}], "stream": True, "ignore_eos": True, "max_tokens": 4000}


def section_disconnect(a):
    before = health(a)["cancelled"]
    s = open_stream(a, LONG)
    read_until(s, lambda b: b.count(b"\"content\":") >= 3)
    s.close()
    t0 = time.time()
    while health(a)["busy"] or health(a)["cancelled"] == before:
        check(time.time() - t0 < 20, "the generation stopped after the client left")
        time.sleep(0.05)
    log = open(a.log).read()
    m = re.findall(r"client disconnected after (\d+) token", log)
    check(m and int(m[-1]) < 4000, f"the log says the generation stopped early: {m}")
    print(f"disconnect: generation stopped after {m[-1]} of 4000 tokens, {time.time() - t0:.2f} s after the client left")


def section_prefill_disconnect(a):
    """A client that hangs up during a long prompt stops it between chunks (the server runs with a small
    --ubatch-size), not after the whole prefill; the next request is answered."""
    before = health(a)["cancelled"]
    long = {"messages": [{"role": "user", "content": "Summarise: " + "the lungs are clear " * 700}],
            "stream": True, "max_tokens": 4}
    s = open_stream(a, long)
    # The role chunk goes out when the model thread takes the request, before its prompt runs.
    read_until(s, lambda b: b'"role":"assistant"' in b)
    s.close()
    t0 = time.time()
    while health(a)["busy"] or health(a)["cancelled"] == before:
        check(time.time() - t0 < 120, "the server noticed that the client left")
        time.sleep(0.05)
    waited = time.time() - t0
    log = open(a.log).read()
    m = re.findall(r"client disconnected during the prompt, after (\d+) of its (\d+) tokens", log)
    check(m, f"the log says the prompt was stopped: {log[-1500:]}")
    done, total = map(int, m[-1])
    check(total > 2000 and done < total, f"stopped after {done} of {total} prompt tokens")
    status, body, _ = request(a, "POST", "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 3, "ignore_eos": True})
    check(status == 200, f"the next request is answered: {status} {body[:300]}")
    check(json.loads(body)["usage"]["completion_tokens"] == 3, f"three tokens: {body[:300]}")
    print(f"prefill_disconnect: the prompt stopped after {done} of {total} tokens, {waited:.2f} s after the "
          "client left; the next request answered")


def section_queue(a):
    first = open_stream(a, LONG)
    read_until(first, lambda b: b"\"content\":" in b)
    second = open_stream(a, {"messages": [{"role": "user", "content": "Short?"}], "stream": True, "max_tokens": 3, "ignore_eos": True})
    waiting = read_until(second, lambda b: b.count(b": waiting") >= 2, limit_s=10)
    check(b"data: {" not in waiting, "the queued stream has no data yet")
    # Clients that give up while queued free their places at once.
    quitters = [open_stream(a, {"messages": [{"role": "user", "content": "Q?"}], "stream": True, "max_tokens": 2}) for _ in range(a.queue - 1)]
    time.sleep(0.3)
    check(health(a)["queued"] == a.queue, f"{a.queue} waiting: {health(a)}")
    for c in quitters:
        c.close()
    t0 = time.time()
    while health(a)["queued"] != 1:
        check(time.time() - t0 < 5, f"queued clients that left still hold places: {health(a)}")
        time.sleep(0.05)
    first.close()
    rest = read_until(second, lambda b: b"data: [DONE]" in b)
    check(b"\"finish_reason\":\"length\"" in rest, f"the queued request ran after the first left: {rest[-300:]!r}")
    second.close()
    print("queue: a waiting stream got SSE keep-alives, then its answer once the running client left")


# ------------------------------------------------------------------------------------------- slow client
def closed_within(sock, limit_s, trickle=None):
    """Seconds until the server closes `sock` (recv gives b"" or a reset), sending `trickle` bytes one at a
    time every 0.2 s meanwhile; fails after limit_s."""
    t0 = time.time()
    sock.settimeout(0.2)
    while time.time() - t0 < limit_s:
        if trickle:
            try:
                sock.sendall(trickle[:1])
            except OSError:
                return time.time() - t0
            trickle = trickle[1:]
        try:
            if sock.recv(65536) == b"":
                return time.time() - t0
        except socket.timeout:
            continue
        except OSError:
            return time.time() - t0
    check(False, f"the connection was still open after {limit_s} s")


def section_slow(a):
    """Started with --header-timeout-secs 1: trickled headers and idle connections are closed, a request that
    runs longer than the header timeout is answered whole, and the server stays healthy."""
    u = urllib.parse.urlparse(a.base_url)
    trickler = socket.create_connection((u.hostname, u.port), timeout=30)
    trickler.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
    t_trickle = closed_within(trickler, 10, trickle=b"Host: x\r\nX-Slow: " + b"a" * 200)
    check(t_trickle < 4, f"a client trickling its headers was cut after {t_trickle:.1f} s")
    idle = socket.create_connection((u.hostname, u.port), timeout=30)
    t_idle = closed_within(idle, 10)
    check(t_idle < 4, f"an idle connection was closed after {t_idle:.1f} s")
    # A stream that outlasts the header timeout is not cut: its headers came at once.
    t0 = time.time()
    s = open_stream(a, {"messages": [{"role": "user", "content": "Hi"}], "stream": True, "ignore_eos": True, "max_tokens": 40})
    body = read_until(s, lambda b: b"data: [DONE]" in b)
    s.close()
    check(b"\"finish_reason\":\"length\"" in body, f"the stream ended whole: {body[-300:]!r}")
    check(health(a)["status"] == "ok", "healthy")
    print(f"slow: trickled headers cut after {t_trickle:.1f} s, an idle connection closed after {t_idle:.1f} s, "
          f"a {time.time() - t0:.1f} s stream answered whole")


# ---------------------------------------------------------------------------------------------- plain
def section_plain(a):
    """A plain llama.cpp GGUF with its own chat template (SmolLM2): real weights, a real answer."""
    c = OpenAI(base_url=a.base_url + "/v1", api_key=a.api_key, max_retries=0)
    model = c.models.list().data[0].id
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=32)
    check("Paris" in r.choices[0].message.content and r.choices[0].finish_reason == "stop", f"answer: {r.choices[0]}")
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=32, stream=True) if ch.choices)
    check(streamed == r.choices[0].message.content, f"stream {streamed!r} != {r.choices[0].message.content!r}")
    r = c.completions.create(model=model, prompt="The capital of France is", max_tokens=4)
    check("Paris" in r.choices[0].text, f"completion: {r.choices[0].text!r}")
    print("plain: SmolLM2 answers through the chat and completion endpoints")


# --------------------------------------------------------------------------------------------- context
def section_context(a):
    s, b, _ = request(a, "GET", "/v1/models", key=False)
    check(json.loads(b)["data"][0]["meta"]["context_length"] == 64, f"the backend's context in the card: {b}")
    s, b, _ = request(a, "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "ignore_eos": True})
    check(s == 200, f"a request without max_tokens fits the backend's context: {s} {b[:300]}")
    u = json.loads(b)["usage"]
    check(u["total_tokens"] == 64, f"it fills the 64 positions exactly: {u}")
    print(f"context: --context-length 64 honoured ({u})")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("section", choices=["client", "raw", "load", "disconnect", "prefill_disconnect", "queue", "slow", "plain", "context"])
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--expect")
    p.add_argument("--model")
    p.add_argument("--image")
    p.add_argument("--log")
    p.add_argument("--queue", type=int, default=4)
    p.add_argument("--max-body-mb", type=int, default=1)
    a = p.parse_args()
    try:
        globals()["section_" + a.section](a)
    except AssertionError as e:
        print(f"FAILED ({a.section}): {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
