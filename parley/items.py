"""Items of the OpenAI Responses and Conversations APIs, as the messages of a Parley thread.

An input item becomes a stored message: a ``message`` keeps its role (``developer`` is stored as
``system``, as on ``/v1/chat/completions``), a ``function_call`` the client sends back becomes an
assistant message's ``tool_calls`` (consecutive calls, and a text message just before them,
make one assistant turn), a ``function_call_output`` a ``tool`` message. A stored message is
shown back as items: its text as a ``message`` item (id: the message's id), each of the
client's tool calls as a ``function_call`` item (id ``fc_<message>_<n>``), a tool message as a
``function_call_output`` item. The calls of Parley's own tools (``shop``...), which ran on
the server, are not the client's items: they are left out.
"""

from __future__ import annotations

from typing import Any

from parley.errors import ApiError, not_found
from parley.store.schema import Message, new_id

_TEXT_PARTS = ("input_text", "output_text", "text")
_ROLES = ("user", "system", "developer", "assistant")
MAX_ITEMS = 1000


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def _text(content: Any, where: str) -> str:
    """The text of a message's ``content``: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(f"{where}.content must be a string or a list of content parts")
    pieces: list[str] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        elif kind == "input_file":
            if not isinstance(part.get("file_id"), str) or not part["file_id"]:
                raise ApiError(
                    422,
                    "unsupported_content",
                    f"{where}.content[{index}]: an input_file needs file_id: upload the file with "
                    "POST /v1/files, then send its id",
                )
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            pieces.append(part["refusal"])
        else:
            raise ApiError(
                422,
                "unsupported_content",
                f"{where}.content[{index}]: only text and file parts (input_text, output_text, "
                "input_file) are supported, "
                f"not {kind!r}",
            )
    return "".join(pieces)


def _output(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _text(value, where)
    raise _invalid(f"{where}.output must be a string or a list of text parts")


def to_messages(items: str | list[Any]) -> list[Message]:
    """Input items as unsaved messages, in order (``thread_id`` and times are the caller's)."""
    if isinstance(items, str):
        return [Message(id=new_id("msg"), role="user", content=items, data={})]
    if len(items) > MAX_ITEMS:
        raise _invalid(f"{len(items)} input items; the limit is {MAX_ITEMS}")
    rows: list[Message] = []
    for index, item in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise _invalid(f"{where} must be an object")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise _invalid(f"{where}.role must be one of {', '.join(_ROLES)}")
            content = _text(item.get("content"), where)
            if role == "assistant":
                rows.append(Message(id=new_id("msg"), role="assistant", content=content, data={}))
            else:
                stored = "system" if role == "developer" else role
                rows.append(Message(id=new_id("msg"), role=stored, content=content, data={}))
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
                raise _invalid(f"{where}: a function_call needs call_id and name")
            arguments = item.get("arguments", "")
            if not isinstance(arguments, str):
                raise _invalid(f"{where}.arguments must be a JSON string")
            call = {"id": call_id, "name": name, "arguments": arguments}
            last = rows[-1] if rows else None
            if last is not None and last.role == "assistant":
                last.data.setdefault("tool_calls", []).append(call)
            else:
                rows.append(
                    Message(id=new_id("msg"), role="assistant", content="", data={"tool_calls": [call]})
                )
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _invalid(f"{where}: a function_call_output needs call_id")
            output = _output(item.get("output"), where)
            rows.append(
                Message(id=new_id("msg"), role="tool", content=output, data={"tool_call_id": call_id})
            )
        else:
            raise ApiError(
                422,
                "unsupported_item",
                f"{where}: item type {kind!r} is not supported; use message, function_call "
                "or function_call_output",
            )
    if not rows:
        raise _invalid("input is empty")
    return rows


def file_ids(items: str | list[Any]) -> list[str]:
    """The files the input's ``input_file`` parts attach, once each (``to_messages`` checked them)."""
    ids: list[str] = []
    for item in items if isinstance(items, list) else []:
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "input_file":
                ids.append(part["file_id"])
    return list(dict.fromkeys(ids))


def client_calls(message: Message) -> list[dict[str, Any]]:
    """The client's tool calls on an assistant message (Parley's own carry their ``output``)."""
    return [c for c in (message.data or {}).get("tool_calls") or [] if "output" not in c]


def call_item_id(message_id: str, index: int) -> str:
    return f"fc_{message_id.removeprefix('msg_')}_{index}"


def parse_call_item_id(item_id: str) -> tuple[str, int] | None:
    """``(message id, call index)`` of a ``function_call`` item id, else None."""
    if not item_id.startswith("fc_"):
        return None
    stem, _, number = item_id.removeprefix("fc_").rpartition("_")
    if not stem or not number.isdigit():
        return None
    return f"msg_{stem}", int(number)


def to_items(message: Message) -> list[dict[str, Any]]:
    """A stored message as Responses items (see the module docstring)."""
    if message.role == "tool":
        return [
            {
                "id": message.id,
                "type": "function_call_output",
                "call_id": (message.data or {}).get("tool_call_id", ""),
                "output": message.content,
                "status": "completed",
            }
        ]
    items: list[dict[str, Any]] = []
    if message.role == "assistant":
        if message.content:
            items.append(
                {
                    "id": message.id,
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": message.content, "annotations": [], "logprobs": []}
                    ],
                }
            )
        for index, call in enumerate(client_calls(message)):
            items.append(
                {
                    "id": call_item_id(message.id, index),
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": call["name"],
                    "arguments": call.get("arguments") or "",
                    "status": "completed",
                }
            )
        return items
    return [
        {
            "id": message.id,
            "type": "message",
            "role": message.role if message.role in ("user", "system") else "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": message.content}],
        }
    ]


def find(messages: list[Message], item_id: str) -> tuple[Message, dict[str, Any]]:
    """The message holding an item, and the item; 404 when there is none."""
    for message in messages:
        for item in to_items(message):
            if item["id"] == item_id:
                return message, item
    raise not_found("item", item_id)


def without_call(message: Message, index: int) -> dict[str, Any]:
    """``message.data`` less its ``index``-th client tool call."""
    data = dict(message.data or {})
    ours = client_calls(message)
    removed = ours[index]
    data["tool_calls"] = [c for c in data.get("tool_calls") or [] if c is not removed]
    if not data["tool_calls"]:
        del data["tool_calls"]
    return data


def page(items: list[dict[str, Any]], *, after: str | None, limit: int, order: str) -> dict[str, Any]:
    """One page of a list of items (``order``: ``asc`` as stored, ``desc`` newest first)."""
    ordered = items if order == "asc" else items[::-1]
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise not_found("item", after)
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }
