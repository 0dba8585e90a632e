"""What each principal stores, kept as it is written, for its ``max_stored_bytes``.

The measure is the characters of the text the database keeps for it: prompts
(commands), answers and errors, metadata (its JSON), the data of task events,
and a session's own metadata and system prompt. Each session row carries its
sum in ``stored_bytes``, added to in the transaction of each write (the
statement that counts a new task, one more after an append of events), and
taken from by retention (``retention``) in the transaction that deletes. A
principal's use is the sum over its sessions, as its cost is: one indexed read.
A sum over the stored columns at each submit would read every byte it counts.
"""

from __future__ import annotations

ADD_TO_SESSION_OF_TASK = (
    "UPDATE sessions SET stored_bytes = stored_bytes + ?"
    " WHERE id = (SELECT session_id FROM tasks WHERE id = ?)"
)
# A principal's use: the sum over the sessions it opened (a subquery of a principal's row).
OF_PRINCIPAL = "(SELECT COALESCE(SUM(stored_bytes), 0) FROM sessions WHERE owner = principals.id)"
# The SQL of what a task row stores, as ``text_size`` counts it.
TASK_SIZE = (
    "LENGTH(command) + COALESCE(LENGTH(output), 0) + COALESCE(LENGTH(error), 0)"
    " + COALESCE(LENGTH(metadata), 0)"
)


def text_size(*values: object) -> int:
    """The characters of the text among ``values`` (as stored: other values count nothing)."""
    return sum(len(value) for value in values if isinstance(value, str))
