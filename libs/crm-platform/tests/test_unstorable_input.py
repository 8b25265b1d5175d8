"""PostgreSQL text and jsonb hold neither U+0000 nor a lone UTF-16 surrogate (JSON's
"\\ud800" escape makes one): either anywhere in input is refused with the field named (REST
422, gRPC INVALID_ARGUMENT), never left to fail as a 500 mid-write."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from fastapi import APIRouter
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pydantic import ValidationError

from crm.common.v1 import money_pb2
from crm_platform import grpc_client
from crm_platform.auth import Authenticator
from crm_platform.grpc_server import GrpcBinding, build_server
from crm_platform.http import ApiModel, create_app
from crm_platform.validation import (
    NON_FINITE_MESSAGE,
    NUL_MESSAGE,
    SURROGATE_MESSAGE,
    InputModel,
    proto_unstorable_paths,
    unstorable,
    unstorable_paths,
)


class Item(ApiModel):
    name: str = ""
    tags: list[str] = []


class Body(ApiModel):
    title: str = ""
    items: list[Item] = []
    custom: dict[str, Any] = {}


def test_unstorable_tells_a_nul_from_a_lone_surrogate() -> None:
    assert unstorable("plain") is None
    assert unstorable("张三 😀") is None  # a surrogate pair in JSON is one real character
    assert unstorable("a\x00") == NUL_MESSAGE
    assert unstorable("张\x00") == NUL_MESSAGE
    assert unstorable("a\ud800") == SURROGATE_MESSAGE
    assert unstorable("\udfff张") == SURROGATE_MESSAGE


def test_unstorable_paths_name_every_string_holding_one() -> None:
    value = {"a": "ok", "b": ["x", "y\x00"], "c": {"d": "\ud800"}, "k\x00": 1, "s\udc00": 1}
    assert list(unstorable_paths(value)) == [
        ("b.1", NUL_MESSAGE),
        ("c.d", SURROGATE_MESSAGE),
        ("k\\u0000", NUL_MESSAGE),
        ("s\\udc00", SURROGATE_MESSAGE),  # the name itself is printable, to be reported
    ]
    assert list(unstorable_paths("plain")) == []
    numbers = {"ok": [1, 2.5], "nan": float("nan"), "inf": [float("-inf")]}
    assert list(unstorable_paths(numbers)) == [
        ("nan", NON_FINITE_MESSAGE),
        ("inf.0", NON_FINITE_MESSAGE),
    ]


def test_proto_unstorable_paths_walk_strings_messages_lists_and_structs() -> None:
    money = money_pb2.Money(currency_code="CN\x00")
    assert list(proto_unstorable_paths(money)) == [("currency_code", NUL_MESSAGE)]
    custom = struct_pb2.Struct()
    custom.update({"ok": "fine", "vip": {"tags": ["a", "b\x00"]}})
    assert list(proto_unstorable_paths(custom, "custom_fields")) == [
        ("custom_fields.vip.tags.1", NUL_MESSAGE)
    ]
    assert list(proto_unstorable_paths(money_pb2.Money(currency_code="CNY", units=5))) == []
    numbers = struct_pb2.Struct()
    numbers.update({"ok": 1.5, "rows": [{"n": float("nan")}], "k\x00": 1})
    assert sorted(proto_unstorable_paths(numbers, "custom")) == [  # maps have no order
        ("custom.k\\u0000", NUL_MESSAGE),
        ("custom.rows.0.n", NON_FINITE_MESSAGE),
    ]


def test_input_models_refuse_unstorable_text_in_any_field_their_subclasses_declare() -> None:
    class Rule(InputModel):
        name: str

    class Named(Rule):
        labels: dict[str, str] = {}

    with pytest.raises(ValidationError) as caught:
        Named(name="a\x00", labels={"k": "v\x00"})
    errors = {e["loc"]: e["msg"] for e in caught.value.errors()}
    assert errors == {("name",): NUL_MESSAGE, ("labels",): f"at k: {NUL_MESSAGE}"}
    assert Named(name="a", labels={"k": "v"}).name == "a"
    with pytest.raises(ValidationError) as caught:
        Named(name="a", labels={"k": "v\ud800"})
    assert caught.value.errors()[0]["msg"] == f"at k: {SURROGATE_MESSAGE}"


def _app() -> Any:
    router = APIRouter()

    @router.post("/v1/things")
    async def create(body: Body) -> dict[str, Any]:
        return body.model_dump()

    @router.get("/v1/things/{thing_id}")
    async def get(thing_id: str, q: str = "") -> dict[str, Any]:
        return {"id": thing_id, "q": q}

    async def ready() -> dict[str, bool]:
        return {}

    return create_app(
        title="nul test",
        routers=[router],
        authenticator=_authenticator(),
        readiness=ready,
        max_body_bytes=4096,
        traced=False,
    )


def _authenticator() -> Authenticator:
    return Authenticator(jwks_url="http://127.0.0.1:9/jwks", issuer="x", audience="x")


async def test_rest_names_the_field_path_or_parameter_holding_a_nul() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        body = '{"title": "t", "items": [{"name": "ok"}, {"tags": ["a", "b\\u0000"]}]}'
        nested = await client.post(
            "/v1/things", content=body, headers={"content-type": "application/json"}
        )
        query = await client.get("/v1/things/1?q=a%00b&page=2")
        path = await client.get("/v1/things/a%00b")
        # An escaped backslash followed by "u0000" is six ordinary characters, not a NUL.
        literal = await client.post(
            "/v1/things",
            content='{"title": "\\\\u0000"}',
            headers={"content-type": "application/json"},
        )
        plain = await client.get("/v1/things/1?q=ok")
        # json.loads turns a lone surrogate escape into a str no UTF-8 can encode: pydantic's
        # str check refuses it, and InputModel does so where the type is Any.
        lone = '{"title": "a\\ud800", "custom": {"note": ["x", "\\udc00y"]}}'
        surrogates = await client.post(
            "/v1/things", content=lone, headers={"content-type": "application/json"}
        )
        # Python's json reads NaN and 1e999 (infinity); neither is JSON nor fits in jsonb.
        non_finite = await client.post(
            "/v1/things",
            content='{"custom": {"a": NaN, "b": [1e999]}, "items": [{"name": "x"}]}',
            headers={"content-type": "application/json"},
        )
        paired = await client.post(
            "/v1/things",
            content='{"custom": {"note": "\\ud83d\\ude00"}}',
            headers={"content-type": "application/json"},
        )
    assert nested.status_code == 422
    assert nested.headers["content-type"] == "application/problem+json"
    assert nested.json()["violations"] == [
        {"field": "items.1.tags", "description": f"at 1: {NUL_MESSAGE}"}
    ]
    assert query.status_code == 422
    assert query.json()["violations"] == [{"field": "q", "description": NUL_MESSAGE}]
    assert path.status_code == 422
    assert path.json()["violations"] == [{"field": "path", "description": NUL_MESSAGE}]
    assert literal.status_code == 200 and literal.json()["title"] == "\\u0000"
    assert plain.json() == {"id": "1", "q": "ok"}
    assert surrogates.status_code == 422, surrogates.text
    assert [v["field"] for v in surrogates.json()["violations"]] == ["title", "custom"]
    assert surrogates.json()["violations"][1]["description"] == f"at note.1: {SURROGATE_MESSAGE}"
    assert non_finite.status_code == 422, non_finite.text
    assert non_finite.json()["violations"] == [
        {"field": "custom", "description": f"at a: {NON_FINITE_MESSAGE}"}
    ]
    assert paired.status_code == 200 and paired.json()["custom"] == {"note": "\U0001f600"}


async def test_grpc_names_the_fields_holding_a_nul() -> None:
    handled: list[struct_pb2.Struct] = []

    async def handle(request: struct_pb2.Struct, context: Any) -> struct_pb2.Struct:
        handled.append(request)
        return request

    def add(_: object, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "crm.test.v1.StructService",
                    {
                        "Echo": grpc.unary_unary_rpc_method_handler(
                            handle,
                            request_deserializer=struct_pb2.Struct.FromString,
                            response_serializer=struct_pb2.Struct.SerializeToString,
                        )
                    },
                ),
            )
        )

    binding = GrpcBinding(
        servicer=object(),
        add=add,
        full_name="crm.test.v1.StructService",
        public_methods=frozenset({"Echo"}),
    )
    server, _ = build_server([binding], _authenticator(), domain="test.crm", traced=False)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc_client.insecure_channel(f"127.0.0.1:{port}", traced=False)
    try:
        echo = channel.unary_unary(
            "/crm.test.v1.StructService/Echo",
            request_serializer=struct_pb2.Struct.SerializeToString,
            response_deserializer=struct_pb2.Struct.FromString,
        )
        bad = struct_pb2.Struct()
        bad.update({"name": "a\x00b", "ok": "fine"})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await echo(bad)
        good = struct_pb2.Struct()
        good.update({"name": "ab"})
        assert await echo(good) == good
        nan = struct_pb2.Struct()
        nan.update({"score": float("nan")})
        with pytest.raises(grpc.aio.AioRpcError) as not_a_number:
            await echo(nan)
        # Bytes no client library would send: a map key that is not UTF-8, and garbage.
        raw = channel.unary_unary(
            "/crm.test.v1.StructService/Echo",
            request_serializer=lambda data: data,
            response_deserializer=struct_pb2.Struct.FromString,
        )
        entry = b"\x0a\x01\xff" + b"\x12\x02\x1a\x00"  # {"\xff": ""}
        undecodable = []
        for data in (b"\x0a" + bytes([len(entry)]) + entry, b"\xff\xff\xff"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await raw(data)
            undecodable.append(refused.value)
    finally:
        await channel.close()
        await server.stop(None)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    request = error_details_pb2.BadRequest()
    assert any(d.Unpack(request) for d in status.details)
    assert [(v.field, v.description) for v in request.field_violations] == [("name", NUL_MESSAGE)]
    assert handled == [good]  # the bad requests never reached the handler
    assert not_a_number.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "score: must be a finite number" in (not_a_number.value.details() or "")
    for error in undecodable:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # not INTERNAL: the caller's
        status = rpc_status.from_call(error)
        assert status is not None and any(d.Unpack(request) for d in status.details)
        assert [v.field for v in request.field_violations] == ["request"]
