"""The optional extras (`ml`: torch, transformers, ...; `report`: matplotlib): which features need them and what
of them is missing here.

Everything but training, the local chat model and `learnstream report` runs without them. Those features ask here
before they start, so a missing package is reported by name, with the command that installs it, instead of as an
ImportError from deep inside a run. The check only looks the packages up (importlib's find_spec): it never imports
torch.

Here in learnstream/ rather than in trainer/ or serving/: both ask, and stages never import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec

# The extras' import names, and the names pip knows them by.
PIP_NAMES = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers",
             "sklearn": "scikit-learn", "scipy": "scipy", "matplotlib": "matplotlib"}


class MissingPackages(RuntimeError):
    """A feature cannot run here; the message names it, the missing packages and the install command."""


@dataclass(frozen=True)
class Feature:
    description: str  # how messages name it, e.g. "chat training"
    modules: tuple[str, ...]  # the top-level modules it imports from the extra (keys of PIP_NAMES)
    extra: str = "ml"  # the pyproject extra that installs them

    def missing(self) -> list[str]:
        """The packages it needs that are not installed here, as pip names them; [] when it can run."""
        return [PIP_NAMES[module] for module in self.modules if find_spec(module) is None]

    def unavailable(self) -> str | None:
        """Why it cannot run here, or None when it can."""
        missing = self.missing()
        if not missing:
            return None
        install = f"pip install 'learnstream[{self.extra}]'"
        return f"{self.description} needs {', '.join(missing)}, not installed here: {install}"

    def require(self) -> None:
        """Raise MissingPackages when it cannot run here."""
        if (reason := self.unavailable()) is not None:
            raise MissingPackages(reason)


LOCAL_CHAT = Feature("the local chat model", ("torch", "transformers"))
# Per family: a training run, and (chat) building version 0, the base model, which runs through the same code.
TRAINING = {
    "chat": Feature("chat training", ("torch", "transformers", "tokenizers")),
    "image": Feature("image training", ("torch", "scipy", "sklearn")),
}
REPORT = Feature("learnstream report", ("matplotlib",), extra="report")
