"""``parley ask`` and ``parley chat`` against a running server (the CLI is a subprocess)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.config import Settings
from parley.providers.base import TextDelta
from parley.providers.scripted import Delay, Hang, ScriptedProvider
from tests.conftest import Server, serve


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "model": "scripted:echo",
        "knowledge": {},
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def echo_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with serve(settings(tmp_path)) as server:
        yield server


async def parley(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PARLEY_LOG_LEVEL": "WARNING", "NO_COLOR": "1"},
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_ask_prints_the_answer_and_what_it_cost(echo_server: Server) -> None:
    code, out, err = await parley("ask", "--url", echo_server.url, "is anybody out there")
    assert code == 0, err
    assert out.strip() == "is anybody out there"
    assert "tokens in" in err
    assert "$0.000000" in err


async def test_ask_fails_clearly_without_a_server_at_the_url() -> None:
    code, _, err = await parley("ask", "--url", "http://127.0.0.1:9", "hello")
    assert code == 1
    assert "no Parley server answers at http://127.0.0.1:9" in err


async def test_chat_keeps_one_thread_for_the_conversation(echo_server: Server) -> None:
    code, out, err = await parley("chat", "--url", echo_server.url, stdin=b"first words\nsecond words\n")
    assert code == 0, err
    assert "first words" in out
    assert "second words" in out
    threads = (await echo_server.client.get("/v1/threads")).json()["data"]
    assert len(threads) == 1
    messages = (await echo_server.client.get(f"/v1/threads/{threads[0]['id']}/messages")).json()["data"]
    assert [m["content"] for m in messages] == ["first words", "first words", "second words", "second words"]


async def test_ctrl_c_in_chat_cancels_the_run_and_chat_goes_on(tmp_path: Path) -> None:
    provider = ScriptedProvider(turns=[[TextDelta("thinking hard"), Hang()], [TextDelta("fresh answer")]])
    async with serve(
        settings(tmp_path, model="scripted:hang"), providers={"scripted:hang": provider}
    ) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "parley",
            "chat",
            "--url",
            server.url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(b"please think\n")
        await process.stdin.drain()
        seen = b""
        while b"thinking hard" not in seen:
            seen += await asyncio.wait_for(process.stdout.read(100), 60)
        process.send_signal(signal.SIGINT)
        for _ in range(100):
            if provider.open_streams == 0:
                break
            await asyncio.sleep(0.05)
        assert provider.open_streams == 0
        process.stdin.write(b"and now?\n")
        process.stdin.close()
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert "[cancelled]" in err.decode()
        assert "fresh answer" in out.decode()
        thread = (await server.client.get("/v1/threads")).json()["data"][0]["id"]
        messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
        first_run = (await server.client.get(f"/v1/runs/{messages[0]['run_id']}")).json()
        assert first_run["status"] == "cancelled"


async def test_ask_starts_a_server_in_process_when_none_answers(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley",
        "ask",
        "hello from nowhere",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "PARLEY_URL": "http://127.0.0.1:9",
            "PARLEY_MODEL": "scripted:echo",
            "PARLEY_DATA_DIR": str(tmp_path / "data"),
            "PARLEY_DATABASE_URL": "",
            "PARLEY_KNOWLEDGE": "{}",
        },
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "hello from nowhere"
    assert "starting one in this process" in err.decode()
    assert (tmp_path / "data" / "parley.db").exists()


async def test_ask_shows_products_and_the_cart_as_tables(tmp_path: Path) -> None:
    small = ScriptedProvider(chooses_tools=False, turns=[])
    async with serve(
        settings(tmp_path, model="scripted:small"), providers={"scripted:small": small}
    ) as server:
        code, out, err = await parley("ask", "--url", server.url, "-a", "shop", "what's in my cart?")
        assert code == 0, err
        assert out.count("Your cart is empty.") == 1, out  # the reply says it; no empty table
        code, out, err = await parley("ask", "--url", server.url, "-a", "shop", "show me wireless headphones")
        assert code == 0, err
        lines = out.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("PRODUCT"))
        assert lines[header].split() == ["PRODUCT", "PRICE", "STOCK", "ID"]
        rows = lines[header + 1 : header + 9]
        assert all("$" in row and ("in stock" in row or "out of stock" in row) for row in rows), out
        ordinal = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
        pick = next(n for n, row in enumerate(rows) if "out of stock" not in row)
        assert rows[0].split()[-1].startswith("AUD-")  # the product's id
        thread = (await server.client.get("/v1/threads")).json()["data"][0]["id"]
        code, out, err = await parley(
            "ask",
            "--url",
            server.url,
            "-a",
            "shop",
            "--thread",
            thread,
            f"add the {ordinal[pick]} one to my cart",
        )
        assert code == 0, err
        cart = await server.parley.shop.cart(thread)
        assert len(cart["items"]) == 1, out
        [item] = cart["items"]
        table = out.splitlines()
        row = next(line for line in table if item["product_name"][:20] in line)
        assert row.split()[0] == "1"  # the quantity
        assert f"${item['total_price']:,.2f}" in row
        assert any(f"total ${cart['summary']['estimated_total']:,.2f}" in line for line in table)


async def test_ask_lists_the_sources_under_a_grounded_answer(tmp_path: Path) -> None:
    from tests.knowledge_data import FAQ

    (tmp_path / "faq.md").write_text(FAQ)
    knowledge = {"parley-faq": [tmp_path / "faq.md"]}
    async with serve(settings(tmp_path, embeddings="hash", knowledge=knowledge)) as server:
        code, out, err = await parley(
            "ask", "--url", server.url, "-a", "support", "What is the refund policy?"
        )
    assert code == 0, err
    answer, _, listed = out.partition("Sources:")
    assert "[1]" in answer
    first = listed.splitlines()[1]
    assert first.startswith("  [1] What is the refund policy?: ")
    assert "Annual plans are refunded" in first


async def test_a_spinner_turns_on_a_terminal_until_the_first_token(tmp_path: Path) -> None:
    import pty

    # Two seconds: the first frame comes round again after ten frames (one second at 0.1 s a
    # frame); with a one-second wait a loaded machine drew only those ten (a CI run).
    slow = ScriptedProvider(turns=[[Delay(2.0), TextDelta("here at last")]])
    async with serve(settings(tmp_path, model="scripted:slow"), providers={"scripted:slow": slow}) as server:
        leader, follower = pty.openpty()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "parley",
            "ask",
            "--url",
            server.url,
            "take your time",
            stdout=asyncio.subprocess.PIPE,
            stderr=follower,
            env={**os.environ, "PARLEY_LOG_LEVEL": "WARNING", "NO_COLOR": "1"},
        )
        os.close(follower)
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed: all of it was read
                break
            if not chunk:
                break
            seen += chunk
        os.close(leader)
    assert process.returncode == 0
    assert out.decode().strip() == "here at last"
    err = seen.decode()
    assert "thinking…" in err
    assert err.count("\r⠋ thinking…") >= 2  # it turned for the seconds the model took
    assert err.index("\x1b[2K") < err.index("tokens in")  # cleared before the usage line


async def test_ask_support_without_a_server_answers_from_the_demo_faq(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley",
        "ask",
        "-a",
        "support",
        "Which port does Parley listen on?",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "PARLEY_URL": "http://127.0.0.1:9",
            "PARLEY_MODEL": "scripted:echo",
            "PARLEY_EMBEDDINGS": "hash",
            "PARLEY_DATA_DIR": str(tmp_path / "data"),
            "PARLEY_DATABASE_URL": "",
        },
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    answer, _, sources = out.decode().partition("Sources:")
    assert "8000" in answer
    assert "[1] Which port does Parley listen on, and how do I change it?" in sources
