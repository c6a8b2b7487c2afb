"""Follows one JSON tool-call object, `{"name": "f", "<args key>": {...}}`, as its text arrives.

Streaming tool calls need the name as soon as its string closes and the arguments as raw text
while they grow, long before the object parses as JSON. This scanner tracks just enough of
JSON (nesting depth, strings and escapes, which key a top-level value belongs to) for that.
Keys may come in any order; other keys are skipped. It never fails: on text that is not JSON it
simply never reports a name, and whoever checks the finished call rejects it.
"""

from __future__ import annotations

import json

# Where the scanner is inside the object, at its top level (depth 1).
_BEFORE = "before"  # nothing yet: text before the opening brace is skipped
_KEY = "key"  # expecting a key (or the closing brace)
_COLON = "colon"  # after a key
_VALUE = "value"  # after the colon, before the value's first character
_IN_VALUE = "in_value"  # inside a top-level value
_AFTER_VALUE = "after_value"  # expecting a comma or the closing brace
_DONE = "done"


class JsonNesting:
    """Where a stream of JSON text stands: inside a string (escapes followed) or not, and how
    many objects and arrays are open."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self._escaped = False

    def read(self, char: str) -> None:
        if self.in_string:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self.in_string = False
        elif char == '"':
            self.in_string = True
        elif char in "{[":
            self.depth += 1
        elif char in "}]":
            self.depth -= 1


class ToolCallScanner:
    def __init__(self, args_key: str | tuple[str, ...]) -> None:
        # The key (or keys: Llama 3 writes either) whose value is the arguments.
        self.args_keys = (args_key,) if isinstance(args_key, str) else args_key
        self.name: str | None = None
        self._args: list[str] = []  # raw text of the arguments value so far
        self._args_seen = False
        self._state = _BEFORE
        self._json = JsonNesting()  # its depth counts the object's own brace
        self._key: str | None = None  # the key whose value is being read
        self._token: list[str] = []  # the current key, or the name value, with its quotes

    @property
    def done(self) -> bool:
        """The object's closing brace has been read."""
        return self._state == _DONE

    @property
    def arguments(self) -> str:
        """The arguments' JSON text so far. A finished call that had none has "{}": a tool
        without parameters is still called with an object."""
        if self.done and not self._args_seen:
            return "{}"
        return "".join(self._args)

    def feed(self, text: str) -> int:
        """Reads `text` up to the end of the object; returns how many characters it used."""
        for i, char in enumerate(text):
            if self._state == _DONE:
                return i
            self._read(char)
        return len(text)

    def _read(self, char: str) -> None:
        json_text = self._json
        if json_text.in_string:
            self._keep(char)
            json_text.read(char)
            if not json_text.in_string and json_text.depth == 1:
                self._top_level_string_closed()
            return
        if self._state == _BEFORE:
            if char == "{":
                json_text.read(char)
                self._state = _KEY
            return
        if json_text.depth > 1:  # inside a nested object or array of a value
            self._keep(char)
            json_text.read(char)
            if json_text.depth == 1:  # that value closed
                self._state = _AFTER_VALUE
            return
        if self._state == _KEY:
            if char == '"':
                self._token = ['"']
                json_text.read(char)
            elif char == "}":
                self._state = _DONE
        elif self._state == _COLON:
            if char == ":":
                self._state = _VALUE
        elif self._state == _VALUE:
            if not char.isspace():
                self._state = _IN_VALUE
                if self._key in self.args_keys:
                    self._args_seen = True
                self._token = []
                self._value_char(char)
        elif self._state == _IN_VALUE:
            self._value_char(char)
        elif self._state == _AFTER_VALUE:
            if char == ",":
                self._state = _KEY
            elif char == "}":
                self._state = _DONE

    def _value_char(self, char: str) -> None:
        """A character of a top-level value, outside any string."""
        if char in ",}" or char.isspace():  # the end of a number, true, false or null
            self._state = _AFTER_VALUE
            self._read(char)
            return
        self._keep(char)
        if char in '"{[':
            self._json.read(char)

    def _keep(self, char: str) -> None:
        if self._state == _KEY:
            self._token.append(char)
        elif self._key in self.args_keys:
            self._args.append(char)
        elif self._key == "name":
            self._token.append(char)

    def _top_level_string_closed(self) -> None:
        text = "".join(self._token)
        if self._state == _KEY:
            self._key = _loads_string(text)
            self._state = _COLON
            return
        self._state = _AFTER_VALUE  # a string value ended
        if self._key == "name":
            self.name = _loads_string(text)


def _loads_string(text: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, str) else None
