"""Package file bodies split out of a transaction's messages, to be stored once."""

from __future__ import annotations

from typing import Any

from gnosync.decode import shapes


def split_files(block_height: int, tx_index: int, messages: str) -> tuple[str, list[tuple]]:
    """The messages JSON to store and the ``package_files`` rows (PACKAGE_FILE_COLUMNS order).

    ``messages`` is the sanitized served messages text. Every file of a message's
    ``value.package.files`` whose name and body are strings becomes ``{name, size}``
    (size: UTF-8 bytes of the body) and its body a row; a later file of a name already
    seen in the same message keeps its body inline, so the rows' key holds. Text without
    ``"files"`` is returned as it is (the same object), and so is text that is not JSON
    or has no body to split; this never raises.
    """
    if '"files"' not in messages:
        return messages, []
    doc = shapes.generic(messages)
    if not isinstance(doc, list):
        return messages, []
    rows: list[tuple] = []
    for msg_index, message in enumerate(doc):
        files = _files_of(message)
        if files is None:
            continue
        seen: set[Any] = set()
        for position, file in enumerate(files):
            if not isinstance(file, dict):
                continue
            name, body = file.get("name"), file.get("body")
            key = name if isinstance(name, str) else shapes.encode(name) if name is not None else None
            first = key not in seen
            seen.add(key)
            if first and isinstance(name, str) and isinstance(body, str):
                rows.append((block_height, tx_index, msg_index, name, body))
                stripped = {k: v for k, v in file.items() if k != "body"}
                stripped["size"] = len(body.encode("utf-8", "surrogatepass"))
                files[position] = stripped
    if not rows:
        return messages, []
    return shapes.encode(doc), rows


def _files_of(message: Any) -> list[Any] | None:
    if not isinstance(message, dict):
        return None
    value = message.get("value")
    package = value.get("package") if isinstance(value, dict) else None
    files = package.get("files") if isinstance(package, dict) else None
    return files if isinstance(files, list) else None
