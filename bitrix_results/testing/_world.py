"""The portal's data: users, tasks, comments, task-chat messages and task results.

Pure domain rules from api-facts §5, with no wire format: who may see a task, who may edit
a result, when a result is born closed, which comment may be pinned. Errors are
:class:`WorldError` with a :class:`Refusal` kind; the wire layer turns a kind into the
v2 or v3 error body of the method that hit it.

Writes can be undone (:meth:`World.begin`/:meth:`World.rollback`) so a v3 batch can be
all-or-nothing without copying the world.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["ADMIN_USER", "OTHER_USER", "WEBHOOK_USER", "World", "WorldError"]

#: The webhook's user: an ordinary employee (the default webhook authenticates as them).
WEBHOOK_USER = 1
#: A portal administrator (api-facts §5.7: may pin anyone's comment).
ADMIN_USER = 2
#: A colleague: authors comments and results the webhook user may not touch.
OTHER_USER = 3


class Refusal(enum.Enum):
    """Why the world refused an operation."""

    TASK_NOT_FOUND = "Task not found"
    TASK_ACCESS_DENIED = "Access denied"
    RESULT_NOT_FOUND = "Result not found"
    NOT_RESULT_AUTHOR = "Access denied"
    MESSAGE_NOT_IN_TASK_CHAT = "Message is not from task chat"
    COMMENT_NOT_FOUND = "Comment not found."
    COMMENT_ACCESS_DENIED = "Access denied."
    RESULT_ALREADY_EXISTS = "Result already exists."
    NOTHING_TO_UNPIN = "Action is not allowed"


class WorldError(Exception):
    """A domain rule refused the operation; ``refusal`` says which."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


@dataclass
class User:
    id: int
    name: str
    is_admin: bool = False


@dataclass
class Task:
    id: int
    title: str
    #: api-facts §5.1: results added to a completed task are born closed.
    completed: bool = False
    #: None: every user has access; otherwise only these users (and administrators).
    members: frozenset[int] | None = None


@dataclass
class Comment:
    id: int
    task_id: int
    author_id: int
    text: str


@dataclass
class ChatMessage:
    id: int
    #: None: a message of a chat that is not a task chat.
    task_id: int | None
    author_id: int
    text: str


@dataclass
class Result:
    id: int
    task_id: int
    text: str
    author_id: int
    created_at: float
    updated_at: float | None = None
    closed: bool = False
    file_ids: list[int] = field(default_factory=list)
    message_id: int | None = None
    comment_id: int | None = None


class World:
    """Users, tasks, comments, chat messages and results, with the rules of api-facts §5.

    Seeded with: users 1 (ordinary, the webhook's), 2 (administrator) and 3 (a
    colleague); tasks 1..1000 open to everyone, of which 991..1000 are completed;
    tasks 9001..9010 that only user 3 and administrators can see; for tasks 1..20 one
    comment and one task-chat message by user 1 and one of each by user 3; and a few
    messages of a private (non-task) chat.
    """

    def __init__(self) -> None:
        self.users: dict[int, User] = {}
        self.tasks: dict[int, Task] = {}
        self.comments: dict[int, Comment] = {}
        self.messages: dict[int, ChatMessage] = {}
        self.results: dict[int, Result] = {}
        # Results by task, so listing one task stays O(its results) in a big import.
        self._by_task: dict[int, dict[int, Result]] = {}
        self._next_result = 1
        self._next_comment = 1001
        self._next_message = 5001
        self._undo: list[Callable[[], object]] | None = None
        self._new_results: list[Result] = []

    # -- seeding -----------------------------------------------------------------------
    def seed_default(self) -> None:
        self.users[WEBHOOK_USER] = User(WEBHOOK_USER, "Webhook User")
        self.users[ADMIN_USER] = User(ADMIN_USER, "Portal Admin", is_admin=True)
        self.users[OTHER_USER] = User(OTHER_USER, "Colleague")
        for task_id in range(1, 1001):
            self.tasks[task_id] = Task(task_id, f"Task {task_id}", completed=task_id > 990)
        for task_id in range(9001, 9011):
            self.tasks[task_id] = Task(task_id, f"Private task {task_id}", members=frozenset({3}))
        for task_id in range(1, 21):
            for author in (WEBHOOK_USER, OTHER_USER):
                self.add_comment(task_id, author, f"Comment of user {author} on task {task_id}")
                self.add_message(task_id, author, f"Chat message of user {author}, task {task_id}")
        for n in range(3):
            self.add_message(None, WEBHOOK_USER, f"Private chat message {n}")

    def add_task(
        self,
        task_id: int,
        *,
        title: str = "",
        completed: bool = False,
        members: Iterable[int] | None = None,
    ) -> Task:
        task = Task(
            task_id,
            title or f"Task {task_id}",
            completed=completed,
            members=None if members is None else frozenset(members),
        )
        self.tasks[task_id] = task
        return task

    def add_user(self, user_id: int, *, name: str = "", is_admin: bool = False) -> User:
        user = User(user_id, name or f"User {user_id}", is_admin=is_admin)
        self.users[user_id] = user
        return user

    def add_comment(self, task_id: int, author_id: int, text: str) -> Comment:
        comment = Comment(self._next_comment, task_id, author_id, text)
        self._next_comment += 1
        self.comments[comment.id] = comment
        self._on_undo(lambda: self.comments.pop(comment.id, None))
        return comment

    def add_message(self, task_id: int | None, author_id: int, text: str) -> ChatMessage:
        message = ChatMessage(self._next_message, task_id, author_id, text)
        self._next_message += 1
        self.messages[message.id] = message
        self._on_undo(lambda: self.messages.pop(message.id, None))
        return message

    # -- access ------------------------------------------------------------------------
    def is_admin(self, user_id: int) -> bool:
        user = self.users.get(user_id)
        return user is not None and user.is_admin

    def can_see(self, user_id: int, task: Task) -> bool:
        return task.members is None or user_id in task.members or self.is_admin(user_id)

    def task_for(self, user_id: int, task_id: int) -> Task:
        """The task, if it exists (else TASK_NOT_FOUND) and the user sees it (else denied)."""
        task = self.tasks.get(task_id)
        if task is None:
            raise WorldError(Refusal.TASK_NOT_FOUND)
        if not self.can_see(user_id, task):
            raise WorldError(Refusal.TASK_ACCESS_DENIED)
        return task

    def result_for_author(self, user_id: int, result_id: int) -> Result:
        """api-facts §5.4/§5.5: only the result's author may update or delete it."""
        result = self.results.get(result_id)
        if result is None:
            raise WorldError(Refusal.RESULT_NOT_FOUND)
        task = self.tasks.get(result.task_id)
        if task is None or not self.can_see(user_id, task) or result.author_id != user_id:
            raise WorldError(Refusal.NOT_RESULT_AUTHOR)
        return result

    # -- results -----------------------------------------------------------------------
    def create_result(
        self,
        task: Task,
        text: str,
        author_id: int,
        now: float,
        *,
        message_id: int | None = None,
        comment_id: int | None = None,
    ) -> Result:
        result = Result(
            id=self._next_result,
            task_id=task.id,
            text=text,
            author_id=author_id,
            created_at=now,
            # api-facts §5.1: "Only new results in an unfinished task are open."
            closed=task.completed,
            message_id=message_id,
            comment_id=comment_id,
        )
        self._next_result += 1
        self._keep(result)
        self._new_results.append(result)
        self._on_undo(lambda: self._forget(result))
        return result

    def _keep(self, result: Result) -> None:
        self.results[result.id] = result
        self._by_task.setdefault(result.task_id, {})[result.id] = result

    def _forget(self, result: Result) -> None:
        self.results.pop(result.id, None)
        self._by_task.get(result.task_id, {}).pop(result.id, None)
        if result in self._new_results:
            self._new_results.remove(result)

    def update_result(self, result: Result, text: str, now: float) -> Result:
        old_text, old_updated = result.text, result.updated_at

        def undo() -> None:
            result.text, result.updated_at = old_text, old_updated

        result.text, result.updated_at = text, now
        self._on_undo(undo)
        return result

    def delete_result(self, result: Result) -> None:
        self.results.pop(result.id, None)
        self._by_task.get(result.task_id, {}).pop(result.id, None)
        self._on_undo(lambda: self._keep(result))

    def results_of(self, task_id: int) -> list[Result]:
        return sorted(self._by_task.get(task_id, {}).values(), key=_by_id)

    def take_new_results(self) -> list[Result]:
        """Results created since the last call (for the ledger)."""
        new, self._new_results = self._new_results, []
        return new

    def complete_task(self, task_id: int) -> None:
        """api-facts §5.1: completing closes every result, and they stay closed on resume."""
        task = self.tasks[task_id]
        task.completed = True
        for result in self.results_of(task_id):
            result.closed = True

    def resume_task(self, task_id: int) -> None:
        self.tasks[task_id].completed = False

    # -- comments (v2 addFromComment / deleteFromComment, api-facts §5.7-5.8) ---------------
    def comment_for(self, user_id: int, comment_id: int) -> tuple[Comment, Task]:
        comment = self.comments.get(comment_id)
        if comment is None:
            raise WorldError(Refusal.COMMENT_NOT_FOUND)
        task = self.tasks.get(comment.task_id)
        if task is None:
            raise WorldError(Refusal.COMMENT_NOT_FOUND)
        # api-facts §5.7: own comments only, unless an administrator.
        if not self.can_see(user_id, task) or (
            comment.author_id != user_id and not self.is_admin(user_id)
        ):
            raise WorldError(Refusal.COMMENT_ACCESS_DENIED)
        return comment, task

    def pin_comment(self, user_id: int, comment_id: int, now: float) -> Result:
        comment, task = self.comment_for(user_id, comment_id)
        # api-facts §5.1: an open result blocks re-adding the comment; a closed one does not.
        if any(r.comment_id == comment.id and not r.closed for r in self.results_of(task.id)):
            raise WorldError(Refusal.RESULT_ALREADY_EXISTS)
        # api-facts §5.7: an administrator pinning another's comment becomes the author.
        return self.create_result(task, comment.text, user_id, now, comment_id=comment.id)

    def unpin_comment(self, user_id: int, comment_id: int) -> None:
        comment, task = self.comment_for(user_id, comment_id)
        pinned = [r for r in self.results_of(task.id) if r.comment_id == comment.id]
        if not pinned:
            raise WorldError(Refusal.NOTHING_TO_UNPIN)
        # api-facts §5.8: it only unpins; the comment itself stays.
        self.delete_result(max(pinned, key=_by_id))

    # -- chat (v3 addfromchatmessage / chat.message.send, api-facts §5.3, §5.9) --------------
    def message_for(self, user_id: int, message_id: int) -> tuple[ChatMessage, Task]:
        message = self.messages.get(message_id)
        if message is None or message.task_id is None:
            raise WorldError(Refusal.MESSAGE_NOT_IN_TASK_CHAT)
        return message, self.task_for(user_id, message.task_id)

    # -- undo journal (v3 batch rollback) ------------------------------------------------
    def begin(self) -> None:
        """Start recording undo steps for every write until commit/rollback."""
        self._undo = []

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        """Undo every write since :meth:`begin`, newest first."""
        steps, self._undo = self._undo or [], None
        for step in reversed(steps):
            step()

    def _on_undo(self, step: Callable[[], object]) -> None:
        if self._undo is not None:
            self._undo.append(step)


def _by_id(result: Result) -> int:
    return result.id
