"""The official `openai` and `ollama` Python clients, unchanged, against an IICP gateway.

IICP_GATEWAY_URL is the gateway's base URL (http://127.0.0.1:PORT). The mesh behind it serves
the chat model `tiny-chat` and the embedding model `tiny-embed` from a backend double whose
replies echo the words of the last user message (5 of them) and whose embeddings have 8
dimensions. `scripts/python_clients.sh` sets all of this up.
"""

import os
import signal

import ollama
import openai
import pytest

URL = os.environ.get("IICP_GATEWAY_URL", "http://127.0.0.1:9483").rstrip("/")
CHAT = "tiny-chat"
EMBED = "tiny-embed"
DIMS = 8
MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello mesh world"},
]
REPLY = "hello mesh world hello mesh"


@pytest.fixture(scope="module")
def oa():
    # The gateway needs no key; the client insists on having one.
    return openai.OpenAI(base_url=f"{URL}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def ol():
    return ollama.Client(host=URL)


# --- openai -----------------------------------------------------------------------------------


def test_openai_chat(oa):
    r = oa.chat.completions.create(model=CHAT, messages=MESSAGES)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == CHAT
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == REPLY
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 5
    assert r.usage.total_tokens >= 5


def test_openai_chat_headers(oa):
    raw = oa.chat.completions.with_raw_response.create(model=CHAT, messages=MESSAGES)
    assert raw.headers.get("x-iicp-node")
    assert raw.headers.get("x-iicp-attempts") == "1"
    assert raw.headers.get("x-iicp-generated-by-ai") == "true"
    assert raw.parse().choices[0].message.content == REPLY


def test_openai_chat_options_and_tools(oa):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    r = oa.chat.completions.create(
        model=CHAT,
        messages=MESSAGES,
        max_tokens=2,
        temperature=0.2,
        stop="END",
        seed=1,
        tools=tools,
        tool_choice="auto",
    )
    assert r.choices[0].message.content == "hello mesh"
    assert r.choices[0].finish_reason == "length"


def test_openai_chat_stream(oa):
    stream = oa.chat.completions.create(
        model=CHAT,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_openai_chat_stream_helper(oa):
    # The client's higher-level streaming helper accumulates the chunks itself.
    with oa.chat.completions.stream(model=CHAT, messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == REPLY


def test_openai_embeddings(oa):
    # Without encoding_format the client asks for base64 and decodes it.
    r = oa.embeddings.create(model=EMBED, input=["one", "two words"])
    assert r.object == "list"
    assert r.model == EMBED
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == DIMS for d in r.data)
    f = oa.embeddings.create(model=EMBED, input="one", encoding_format="float")
    assert f.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-6)
    assert f.usage.prompt_tokens >= 1


def test_openai_models(oa):
    ids = [m.id for m in oa.models.list()]
    assert CHAT in ids and EMBED in ids
    m = oa.models.retrieve(CHAT)
    assert m.id == CHAT
    assert m.owned_by == "iicp"


def test_openai_unknown_model(oa):
    with pytest.raises(openai.NotFoundError) as e:
        oa.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        oa.embeddings.create(model="no-such-model", input="x")


def test_openai_invalid_request(oa):
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model=CHAT, messages=[])


# --- ollama -----------------------------------------------------------------------------------


def test_ollama_chat(ol):
    r = ol.chat(model=CHAT, messages=MESSAGES)
    assert r.model == CHAT
    assert r.done
    assert r.message.role == "assistant"
    assert r.message.content == REPLY
    assert r.eval_count == 5
    assert r["message"]["content"] == REPLY


def test_ollama_chat_options(ol):
    r = ol.chat(
        model=CHAT,
        messages=MESSAGES,
        options={"num_predict": 2, "temperature": 0.1, "seed": 3},
        format="json",
    )
    assert r.message.content == "hello mesh"
    assert r.done_reason == "length"


def test_ollama_chat_stream(ol):
    parts = list(ol.chat(model=CHAT, messages=MESSAGES, stream=True))
    assert len(parts) >= 3
    assert all(not p.done for p in parts[:-1])
    assert parts[-1].done
    assert parts[-1].done_reason == "stop"
    assert "".join(p.message.content for p in parts) == REPLY


def test_ollama_generate(ol):
    r = ol.generate(model=CHAT, prompt="why is the sky blue")
    assert r.response == "why is the sky blue"
    assert r.done
    parts = list(ol.generate(model=CHAT, prompt="a b c", stream=True))
    assert "".join(p.response for p in parts) == "a b c a b"
    assert parts[-1].done


def test_ollama_embed(ol):
    r = ol.embed(model=EMBED, input=["one", "two"])
    assert r.model == EMBED
    assert len(r.embeddings) == 2
    assert all(len(e) == DIMS for e in r.embeddings)
    single = ol.embed(model=EMBED, input="one")
    assert single.embeddings[0] == pytest.approx(r.embeddings[0], abs=1e-6)


def test_ollama_list(ol):
    names = [m.model for m in ol.list().models]
    assert CHAT in names and EMBED in names


def test_ollama_unknown_model(ol):
    with pytest.raises(ollama.ResponseError) as e:
        ol.chat(model="no-such-model", messages=MESSAGES)
    assert e.value.status_code == 404
    assert "not found" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        list(ol.chat(model="no-such-model", messages=MESSAGES, stream=True))
    assert e.value.status_code == 404


# --- faults (runs last: it kills a node) ------------------------------------------------------


def test_zz_a_killed_node_is_routed_around(oa, ol):
    """The script starts two nodes and names their pids; one is killed with SIGKILL mid-run.

    The directory keeps listing the dead node until it misses its heartbeats, so every
    request below must reach the survivor through client-side failover, with no error."""
    pids = [int(p) for p in os.environ.get("IICP_NODE_PIDS", "").split()]
    if len(pids) < 2:
        pytest.skip("needs IICP_NODE_PIDS with two node pids (scripts/python_clients.sh)")
    for _ in range(4):
        assert oa.chat.completions.create(model=CHAT, messages=MESSAGES).choices
    os.kill(pids[0], signal.SIGKILL)
    for _ in range(10):
        r = oa.chat.completions.create(model=CHAT, messages=MESSAGES)
        assert r.choices[0].message.content == REPLY
        chunks = list(oa.chat.completions.create(model=CHAT, messages=MESSAGES, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
        assert ol.chat(model=CHAT, messages=MESSAGES).message.content == REPLY
        assert len(oa.embeddings.create(model=EMBED, input="x").data[0].embedding) == DIMS

