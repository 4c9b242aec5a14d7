"""The enclave side must not contain host code: tee, bundle, attest, shield and libos never import
host, kbs or cli (DESIGN: Layers). Checked on the import statements of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import haven

ENCLAVE_SIDE = ("tee", "bundle", "attest", "shield", "libos")
FORBIDDEN = ("haven.host", "haven.kbs", "haven.cli")


def _package_of(path: Path) -> str:
    return ".".join(path.relative_to(Path(haven.__file__).parent.parent).with_suffix("").parts[:-1])


def _imports(path: Path, package: str) -> list[str]:
    """Absolute names of every module ``path`` (in ``package``) imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.append(node.module)
    return names


def test_enclave_side_imports_no_host_code() -> None:
    root = Path(haven.__file__).parent
    offenders = []
    for layer in ENCLAVE_SIDE:
        for path in sorted((root / layer).rglob("*.py")):
            for name in _imports(path, _package_of(path)):
                if name.startswith(FORBIDDEN):
                    offenders.append(f"{path.relative_to(root)} imports {name}")
    assert offenders == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    # The checker itself must be able to fail: absolute and relative forms are both seen.
    bad = tmp_path / "probe.py"
    bad.write_text("from haven.host import adversary\nfrom ...cli import main\nimport haven.kbs.db\n")
    assert _imports(bad, "haven.tee.sim") == ["haven.host", "haven.cli", "haven.kbs.db"]


def _module_file(name: str) -> str | None:
    """Archive path of module ``name`` (``haven.x.y`` → ``haven/x/y.py`` or its package ``__init__``)."""
    root = Path(haven.__file__).parent.parent
    as_path = Path(*name.split("."))
    for candidate in (as_path.with_suffix(".py"), as_path / "__init__.py"):
        if (root / candidate).is_file():
            return candidate.as_posix()
    return None


def test_enclave_code_is_closed_under_its_imports() -> None:
    # Everything enclave-side code imports from haven must itself be in the measured code archive,
    # or the enclave would run code nobody measured (or fail to import it).
    from haven.bundle.build import enclave_code_files

    archive = enclave_code_files()
    missing = []
    for path in archive:
        if not (path.startswith("haven/") and path.endswith(".py")):
            continue
        file = Path(haven.__file__).parent.parent / path
        for name in _imports(file, _package_of(file)):
            target = _module_file(name) if name.startswith("haven") else None
            if target is not None and target not in archive:
                missing.append(f"{path} imports {name} ({target})")
    assert missing == []
