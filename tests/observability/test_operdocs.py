"""The operator docs page at /v1/www/docs/oper: RapiDoc served by the gateway, no CDN."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from importlib import resources

import httpx
import pytest

from tests.conftest import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Authentication on: the docs are public like /docs, the API behind them is not.
    srv = Server(tmp_path_factory.mktemp("operdocs") / "data", {"JOBGATE_AUTH": "token"}).start()
    yield srv
    srv.stop()


def test_the_page_loads_its_script_and_spec_from_this_server(server: Server) -> None:
    r = httpx.get(server.url + "/v1/www/docs/oper")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert '<script type="module" src="/v1/www/docs/oper/rapidoc-min.js">' in page
    assert 'spec-url="/openapi.json"' in page
    assert 'load-fonts="false"' in page
    assert re.findall(r"https?://", page) == []
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    spec = httpx.get(server.url + "/openapi.json")
    assert spec.status_code == 200 and spec.json()["info"]["title"] == "jobgate"
    # The page is not an API operation.
    assert not any(p.startswith("/v1/www") for p in spec.json()["paths"])


def test_the_script_is_the_vendored_file_plain_or_gzipped(server: Server) -> None:
    asset = resources.files("jobgate.api").joinpath("assets", "rapidoc-min.js").read_bytes()
    url = server.url + "/v1/www/docs/oper/rapidoc-min.js"
    plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert plain.content == asset
    with httpx.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as packed:
        assert packed.headers["content-encoding"] == "gzip"
        body = b"".join(packed.iter_raw())
    assert gzip.decompress(body) == asset
    assert len(body) < len(asset) // 3
    # Its only Internet fetch, the web fonts, is switched off by the page (load-fonts).
    assert b"fonts.gstatic.com" in asset


def test_the_api_behind_the_page_still_wants_credentials(server: Server) -> None:
    assert httpx.get(server.url + "/ga4gh/tes/v1/tasks").status_code == 401
