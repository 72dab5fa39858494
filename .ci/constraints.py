"""Print the installed versions of specklab's dependency tree (the extras CI installs), as pins.

constraints.txt is this output for the set the suite last passed with:
    python .ci/constraints.py > constraints.txt
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

EXTRAS = {"server", "postgres", "dev"}
#: Some packages list these as run-time requirements; pinning them would pin the build too.
BUILD_TOOLS = {"setuptools", "pip", "wheel"}


def tree(root: str, extras: set[str]) -> dict[str, str]:
    """Name -> installed version of every package ``root[extras]`` pulls in."""
    found: dict[str, str] = {}
    pending = [(root, extras)]
    while pending:
        name, wanted = pending.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # an optional dependency of a dependency, for a platform not this one
        for text in dist.requires or []:
            requirement = Requirement(text)
            markers = [{"extra": extra} for extra in wanted or {""}]
            if requirement.marker and not any(requirement.marker.evaluate(m) for m in markers):
                continue
            key = requirement.name.lower().replace("_", "-")
            if key not in found:
                try:
                    found[key] = distribution(key).version
                except PackageNotFoundError:
                    continue
                pending.append((key, set(requirement.extras)))
    return found


if __name__ == "__main__":
    print("# The tested set: python .ci/constraints.py > constraints.txt (see .ci/run).")
    for name, version in sorted(tree("specklab", EXTRAS).items()):
        if name not in BUILD_TOOLS:
            print(f"{name}=={version}")
