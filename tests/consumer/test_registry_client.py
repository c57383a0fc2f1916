"""The consumer SDK's registry client is the router's, plus a parsed-schema cache and ConsumerError.

Pure tests against a tiny in-process HTTP server that records what each client sends: one
implementation means the same auth header, the same hints and the configured timeout in both.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

import cdcrouter.consumer as sdk
from cdcrouter.config import RegistrySettings
from cdcrouter.consumer import _serde
from cdcrouter.schemas import registry

SCHEMA = {"type": "record", "name": "Ping", "fields": [{"name": "n", "type": "long"}]}
Factory = Callable[[RegistrySettings], registry.RegistryClient]
CLIENTS: dict[str, Factory] = {
    "router": lambda s: registry.RegistryClient(s.to_client_conf()),
    "consumer-sdk": sdk.RegistryClient,
}


@dataclass
class Fake:
    """What the fake registry received; ``delay`` stalls every answer."""

    url: str = ""
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    delay: float = 0.0


@pytest.fixture
def fake() -> Iterator[Fake]:
    state = Fake()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.requests.append((self.command, self.path, dict(self.headers), body))
            time.sleep(state.delay)
            if self.path.endswith("/schemas/ids/7"):
                status, data = 200, {"schema": json.dumps(SCHEMA)}
            elif self.command == "POST" and self.path.endswith("/versions"):
                status, data = 200, {"id": 8}
            else:
                status, data = 404, {"error_code": 40403, "message": "Schema not found"}
            out = json.dumps(data).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", registry.CONTENT_TYPE)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            except OSError:  # the client gave up (the timeout test)
                pass

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/apis/ccompat/v7"
    yield state
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_sdk_client_is_the_router_client_without_its_own_http() -> None:
    assert issubclass(sdk.RegistryClient, registry.RegistryClient)
    own = set(vars(sdk.RegistryClient))
    assert not own & {"_call", "_errors", "_expect_ok", "schema_by_id", "lookup", "close"}
    assert not hasattr(_serde, "httpx"), "the SDK must not talk HTTP itself"
    assert issubclass(sdk.RegistryClient.error, sdk.ConsumerError)
    assert issubclass(sdk.RegistryClient.error, registry.SchemaRegistryError)


@pytest.mark.parametrize("kind", CLIENTS)
def test_basic_auth_from_the_settings_secret(fake: Fake, kind: str) -> None:
    settings = RegistrySettings(url=fake.url + "/", basic_auth_user_info=SecretStr("key:s3:cret"))
    client = CLIENTS[kind](settings)
    try:
        assert json.loads(client.schema_by_id(7) or "") == SCHEMA
    finally:
        client.close()
    method, path, headers, _ = fake.requests[-1]
    assert (method, path) == ("GET", "/apis/ccompat/v7/schemas/ids/7")
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"key:s3:cret").decode()
    assert headers["Accept"] == registry.CONTENT_TYPE
    assert "s3:cret" not in repr(settings)


@pytest.mark.parametrize("kind", CLIENTS)
def test_unreachable_registry_names_the_url_and_says_what_to_do(kind: str) -> None:
    url = f"http://127.0.0.1:{_free_port()}/apis/ccompat/v7"
    client = CLIENTS[kind](RegistrySettings(url=url))
    with pytest.raises(registry.SchemaRegistryError, match="fetching schema id 7 failed") as err:
        client.schema_by_id(7)
    client.close()
    assert url in err.value.message
    assert err.value.hint == registry.UNREACHABLE_HINT
    assert "cdcrouter stack up" in err.value.render()
    assert isinstance(err.value, sdk.ConsumerError) == (kind == "consumer-sdk")


@pytest.mark.parametrize("kind", CLIENTS)
def test_the_configured_timeout_applies(fake: Fake, kind: str) -> None:
    fake.delay = 3.0
    client = CLIENTS[kind](RegistrySettings(url=fake.url, timeout_s=1))
    started = time.monotonic()
    with pytest.raises(registry.SchemaRegistryError, match="ReadTimeout"):
        client.schema_by_id(7)
    client.close()
    assert time.monotonic() - started < 2.5


def test_sdk_caches_parsed_schemas_and_raises_consumer_errors(fake: Fake) -> None:
    with sdk.RegistryClient(RegistrySettings(url=fake.url)) as client:
        first = client.schema(7)
        assert client.schema(7) is first
        assert [r[1] for r in fake.requests] == ["/apis/ccompat/v7/schemas/ids/7"]

        assert client.register("t-value", SCHEMA) == 8
        method, path, headers, body = fake.requests[-1]
        assert (method, path) == ("POST", "/apis/ccompat/v7/subjects/t-value/versions")
        assert headers["Content-Type"] == registry.CONTENT_TYPE
        assert json.loads(json.loads(body)["schema"]) == SCHEMA
        assert client.schema(8)["name"] == "Ping"  # cached at registration: no fetch
        assert len(fake.requests) == 2

        with pytest.raises(sdk.ConsumerError, match="no schema with id 9") as err:
            client.schema(9)
        assert err.value.hint and "CDCROUTER_REGISTRY__URL" in err.value.hint
