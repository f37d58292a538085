"""What a hostile client tries against the admin surface, answered as documented."""

from __future__ import annotations

import httpx

from velithon import Velithon
from velithon.admin import mount_admin
from velithon.admin._actions import ActionError, parse_body


def _client(token: str | None = "s3cret") -> httpx.AsyncClient:
    app = Velithon()
    mount_admin(app, token=token)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def test_percent_encoded_spellings_of_the_admin_path_are_not_the_admin_surface() -> None:
    async with _client() as client:
        assert (await client.get("/_velithon/live")).status_code == 200
        for path in ("/_velithon%2flive", "/%5fvelithon/live", "/_velithon/l%69ve"):
            assert (await client.get(path)).status_code == 404, path


async def test_the_bearer_scheme_is_case_insensitive_the_token_is_not() -> None:
    async with _client() as client:
        body = {"target": "http://127.0.0.1:1"}
        ok = await client.post("/_velithon/targets/drain", json=body,
                               headers={"authorization": "bearer s3cret"})
        assert ok.status_code != 403  # authorized (no such target: 404)
        bad = await client.post("/_velithon/targets/drain", json=body,
                                headers={"authorization": "Bearer S3CRET"})
        assert bad.status_code == 403


def test_a_deeply_nested_body_is_a_400_and_a_huge_target_url_is_refused() -> None:
    for raw in (b"[" * 200_000, b'{"target": "http://127.0.0.1:1/' + b"a" * 5000 + b'"}'):
        try:
            parse_body(raw)
        except ActionError as exc:
            assert exc.status == 400
        else:
            raise AssertionError("accepted")
