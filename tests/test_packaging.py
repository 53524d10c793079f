"""What a wheel installs: memagent and the runner as memagent_evals (never a top-level `evals`), and
optional parts that say which extra they need."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from memagent import _extras
from memagent.cli import main
from memagent.errors import MissingExtra

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_lists_every_package_folder_and_no_top_level_evals() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"memagent": ROOT / "memagent", "memagent_evals": ROOT / "evals"}
    assert setuptools["package-dir"] == {"memagent_evals": "evals"}
    found = {
        ".".join([name, *init.parent.relative_to(folder).parts])
        for name, folder in folders.items()
        for init in folder.rglob("__init__.py")
    }
    assert sorted(setuptools["packages"]) == sorted(found)
    assert not any(p == "evals" or p.startswith("evals.") for p in setuptools["packages"])


def test_the_core_install_leaves_servers_and_plots_to_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for heavy in ("fastapi", "uvicorn", "matplotlib", "gguf", "accelerate", "openai", "mem0ai"):
        assert heavy not in core
    assert {"server", "eval", "gguf", "openai"} <= set(project["optional-dependencies"])


def test_a_missing_extra_names_the_extra_to_install() -> None:
    with pytest.raises(MissingExtra, match=r"needs the 'server' extra \(missing: no_such_module_x\): "
                                           r"pip install 'memagent\[server\]'"):
        _extras.require("server", "no_such_module_x")
    _extras.require("eval", "json")  # present: nothing raised


def test_memagent_eval_without_its_extra_says_which_to_install(monkeypatch, capsys) -> None:
    real = _extras.find_spec
    monkeypatch.setattr(_extras, "find_spec", lambda name: None if name == "matplotlib" else real(name))
    assert main(["eval", "--help"]) == 2
    assert "pip install 'memagent[eval]'" in capsys.readouterr().err
