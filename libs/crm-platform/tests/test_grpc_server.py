"""The gRPC server interceptor's overload behaviour: a call whose deadline passed while it
queued is shed before any work, and a cancelled call lets its work finish rather than
cancelling a statement in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from crm_platform.auth import Authenticator
from crm_platform.grpc_server import ServerInterceptor

METHOD = "/crm.test.v1.TestService/Work"


class FakeContext:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


class Details:
    method = METHOD
    invocation_metadata: tuple[Any, ...] = ()


async def _wrapped(behaviour: Any) -> Any:
    interceptor = ServerInterceptor(
        Authenticator(jwks_url="http://127.0.0.1:9/jwks", issuer="crm", audience="crm"),
        domain="test.crm",
        public={METHOD},
    )

    async def continuation(_: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(behaviour)

    handler = await interceptor.intercept_service(continuation, Details())  # type: ignore[arg-type]
    return handler.unary_unary


async def _cancel_midway(wrapped: Any) -> None:
    """Start a call and cancel it while its work is in flight (as a passed deadline does)."""
    call = asyncio.ensure_future(wrapped(object(), FakeContext(remaining=5.0)))
    await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_call_past_its_deadline_is_shed_before_any_work() -> None:
    ran = False

    async def behaviour(request: Any, context: Any) -> str:
        nonlocal ran
        ran = True
        return "done"

    wrapped = await _wrapped(behaviour)
    context = FakeContext(remaining=0.0)
    with pytest.raises(grpc.aio.AbortError):
        await wrapped(object(), context)
    assert not ran
    assert context.aborted is not None
    assert context.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_call_within_its_deadline_runs() -> None:
    async def behaviour(request: Any, context: Any) -> str:
        return "done"

    wrapped = await _wrapped(behaviour)
    assert await wrapped(object(), FakeContext(remaining=1.0)) == "done"
    assert await wrapped(object(), FakeContext(remaining=None)) == "done"


async def test_cancelled_call_lets_its_work_finish() -> None:
    release = asyncio.Event()
    finished = asyncio.Event()

    async def behaviour(request: Any, context: Any) -> str:
        await release.wait()  # stands for a statement in flight
        finished.set()
        return "done"

    await _cancel_midway(await _wrapped(behaviour))
    assert not finished.is_set()
    release.set()
    await asyncio.wait_for(finished.wait(), 1.0)


async def test_an_abandoned_calls_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def behaviour(request: Any, context: Any) -> str:
        await release.wait()
        raise RuntimeError("boom after the caller left")

    await _cancel_midway(await _wrapped(behaviour))
    release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    failures = [r for r in caplog.records if "cancelled call failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "boom after the caller left" in str(failures[0].exc_info[1])
