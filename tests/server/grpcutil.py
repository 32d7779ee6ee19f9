"""gRPC helpers of the black-box server suite: Python stubs compiled from proto/ at test time
(grpcio-tools into a temporary directory), channels, and small call wrappers.

Needs grpcio, grpcio-tools, grpcio-health-checking and grpcio-reflection (scripts/install_deps.sh).
"""
from __future__ import annotations

import importlib
import sys
import tempfile

import pytest

from srvutil import REPO, TIME_SCALE

PROTO_ROOT = REPO / "proto"
PROTO_FILE = "macserve/v1/generate.proto"

_modules = None


def modules():
    """(grpc, generate_pb2, generate_pb2_grpc), compiled once per test session."""
    global _modules
    if _modules is not None:
        return _modules
    grpc = pytest.importorskip("grpc")
    protoc = pytest.importorskip("grpc_tools.protoc")
    out = tempfile.mkdtemp(prefix="macserve-grpc-stubs-")
    import grpc_tools
    import os
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(PROTO_ROOT / PROTO_FILE)])
    assert rc == 0, f"protoc failed on {PROTO_FILE}"
    sys.path.insert(0, out)
    pb2 = importlib.import_module("macserve.v1.generate_pb2")
    pb2_grpc = importlib.import_module("macserve.v1.generate_pb2_grpc")
    _modules = (grpc, pb2, pb2_grpc)
    return _modules


def channel(target: str, max_bytes: int = 64 << 20):
    grpc, _, _ = modules()
    return grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", max_bytes),
                                                  ("grpc.max_send_message_length", max_bytes)])


def stub(chan):
    _, _, pb2_grpc = modules()
    return pb2_grpc.GenerationStub(chan)


def timeout(seconds: float) -> float:
    return seconds * TIME_SCALE


class Result:
    """Everything one Generate call returned, per completion index."""

    def __init__(self):
        self.chunks: list = []
        self.completes: dict[int, object] = {}
        self.tokens: dict[int, list[int]] = {}
        self.text: dict[int, str] = {}
        self.logprobs: dict[int, list] = {}
        self.messages = 0

    def add(self, resp):
        self.messages += 1
        kind = resp.WhichOneof("response")
        if kind == "chunk":
            c = resp.chunk
            self.chunks.append(c)
            self.tokens.setdefault(c.index, []).extend(c.token_ids)
            self.text[c.index] = self.text.get(c.index, "") + c.text
            self.logprobs.setdefault(c.index, []).extend(c.logprobs)
        else:
            c = resp.complete
            assert c.index not in self.completes, f"two Complete messages for index {c.index}"
            self.completes[c.index] = c
            if c.token_ids or c.text:  # stream = false: the whole completion
                self.tokens[c.index] = list(c.token_ids)
                self.text[c.index] = c.text
                self.logprobs[c.index] = list(c.logprobs)


def generate(gen_stub, request, seconds: float = 120.0, metadata=None) -> Result:
    r = Result()
    for resp in gen_stub.Generate(request, timeout=timeout(seconds), metadata=metadata):
        r.add(resp)
    return r


def request(**kw):
    """A GenerateRequest: text=/chat=[(role, content)]/token_ids=, sampling fields, top-level fields."""
    _, pb2, _ = modules()
    sampling_keys = {f.name for f in pb2.SamplingParams.DESCRIPTOR.fields}
    sampling = {k: kw.pop(k) for k in list(kw) if k in sampling_keys}
    req = pb2.GenerateRequest(sampling=pb2.SamplingParams(**sampling))
    if "chat" in kw:
        msgs = kw.pop("chat")
        agp = kw.pop("add_generation_prompt", None)
        chat = pb2.ChatInput(messages=[pb2.ChatMessage(role=r, content=c) for r, c in msgs])
        if agp is not None:
            chat.add_generation_prompt = agp
        req.chat.CopyFrom(chat)
    if "token_ids" in kw:
        req.token_ids.ids.extend(kw.pop("token_ids"))
    for k, v in kw.items():
        setattr(req, k, v)
    return req
