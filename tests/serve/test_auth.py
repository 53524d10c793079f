"""API keys: the keys file, MEMAGENT_API_KEYS and the old single key, and what each grant allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memagent.errors import InputError
from memagent.serve.auth import Forbidden, Grant, load_keys


def test_a_keys_file_maps_each_key_to_its_users(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"sk-ana": ["ana"], "sk-pair": ["ana", "bo"], "sk-root": "*"}))
    keys = load_keys(file=path)
    assert keys is not None and len(keys) == 3
    assert keys.grant("sk-ana") == Grant(users=frozenset({"ana"}))
    assert keys.grant("sk-pair") == Grant(users=frozenset({"ana", "bo"}))
    assert keys.grant("sk-root") == Grant(admin=True)
    assert keys.grant("sk-an") is None and keys.grant("sk-ana ") is None and keys.grant("") is None


def test_file_env_and_single_key_combine_and_the_single_key_is_admin(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"sk-ana": ["ana"]}))
    keys = load_keys(file=path, env_text=json.dumps({"sk-bo": ["bo"]}), admin_key="sk-old")
    assert keys is not None
    assert [keys.grant(k) for k in ("sk-ana", "sk-bo", "sk-old")] == [
        Grant(users=frozenset({"ana"})),
        Grant(users=frozenset({"bo"})),
        Grant(admin=True),
    ]


def test_no_keys_at_all_is_an_open_server() -> None:
    assert load_keys() is None
    assert load_keys(env_text="", admin_key="") is None


def test_a_grant_allows_its_users_and_names_the_field_it_refuses() -> None:
    ana = Grant(users=frozenset({"ana"}))
    assert ana.check("ana") == "ana" and ana.only_user == "ana"
    with pytest.raises(Forbidden, match="^user: this API key may not touch the memories of 'bo'$"):
        ana.check("bo", "user")
    with pytest.raises(InputError, match="^user_id: must be a non-empty string"):
        ana.check("")
    assert Grant(admin=True).check("anyone") == "anyone" and Grant(admin=True).only_user is None
    assert Grant(users=frozenset({"ana", "bo"})).only_user is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", r"^MEMAGENT_API_KEYS: is not JSON"),
        ('["sk-ana"]', r"^MEMAGENT_API_KEYS: must be a JSON object .*got list"),
        ('{"sk-ana": "ana"}', r"^MEMAGENT_API_KEYS\[sk-a\.\.\.\]: must be \"\*\" \(every user\) or a non-empty list"),
        ('{"sk-ana": []}', r"^MEMAGENT_API_KEYS\[sk-a\.\.\.\]: must be \"\*\""),
        ('{"sk-ana": ["ana", ""]}', r"^MEMAGENT_API_KEYS\[sk-a\.\.\.\]\[1\]: must be a non-empty string"),
        ('{"sk ana": ["ana"]}', r"^MEMAGENT_API_KEYS: key 'sk a\.\.\.' must be a non-empty string without whitespace"),
        ('{"": ["ana"]}', r"^MEMAGENT_API_KEYS: key '\.\.\.' must be a non-empty string"),
        ('{"sk-ana": ["ana"], "sk-ana": "*"}', r"^MEMAGENT_API_KEYS: is not JSON: key 'sk-a\.\.\.' appears twice"),
    ],
    ids=["not json", "a list", "users as a string", "no users", "a blank user", "whitespace", "empty key", "twice"],
)
def test_a_bad_keys_text_is_refused_naming_the_entry_not_the_whole_key(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        load_keys(env_text=text)
    assert "sk-ana" not in str(caught.value)  # keys end up in logs: only their first characters are shown


def test_an_unreadable_keys_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^keys_file: cannot read '.*missing\.json'"):
        load_keys(file=tmp_path / "missing.json")
    path = tmp_path / "keys.json"
    path.write_text("{")
    with pytest.raises(InputError, match=r"^keys file '.*keys\.json': is not JSON"):
        load_keys(file=path)
