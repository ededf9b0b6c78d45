"""What installs is one package, rlsys, holding every module and preset of the repository."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def installed_name(folder: Path, package_dir: dict[str, str]) -> str:
    """The package name a repository folder installs as, by pyproject's package-dir mapping."""
    relative = folder.relative_to(ROOT)
    for package, source in sorted(package_dir.items(), key=lambda item: -len(item[1])):
        if relative == Path(source) or Path(source) in relative.parents:
            rest = relative.relative_to(source).parts
            return ".".join([package, *rest])
    raise AssertionError(f"{relative} is under no package-dir entry")


def test_every_code_and_preset_folder_is_a_listed_package():
    config = setuptools_config()
    package_dir = config["package-dir"]
    folders = {path.parent for source in package_dir.values()
               for pattern in ("*.py", "*.yaml") for path in (ROOT / source).rglob(pattern)
               if "__pycache__" not in path.parts}
    expected = {installed_name(folder, package_dir) for folder in folders}
    assert expected == set(config["packages"]), "pyproject.toml's packages must list exactly these folders"


def test_only_rlsys_installs():
    config = setuptools_config()
    assert {name.split(".")[0] for name in config["packages"]} == {"rlsys"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"rlsys": "rlsys.launchers.cli:main"}
