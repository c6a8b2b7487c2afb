"""The stored responses (`store: true`): in memory, the oldest dropped past a set number.

Each entry keeps the response as sent and the conversation that led to it (input messages
and the reply, without instructions), which `previous_response_id` continues.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import attrs

from protocol.openai.chat_schemas import ChatMessageParam
from protocol.responses.schemas import ResponseObject


@attrs.frozen
class StoredResponse:
    response: ResponseObject
    conversation: list[ChatMessageParam]


class ResponseStore:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        # Handlers run on the event loop, but request preparation reads it in worker threads.
        self._lock = threading.Lock()

    def put(self, stored: StoredResponse) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._entries[stored.response.id] = stored
            self._entries.move_to_end(stored.response.id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            return self._entries.get(response_id)

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._entries.pop(response_id, None) is not None

    def __len__(self) -> int:
        return len(self._entries)
