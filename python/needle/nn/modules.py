"""Python-side constructors for the containers: Sequential(*modules) and ModuleList(iterable)
append through the binding so each child (a Python subclass included) is kept alive."""
from .._C import nn as _nn


class Sequential(_nn.Sequential):
    """Calls its children in order: Sequential(Linear(4, 8), ReLU(), Linear(8, 2))."""

    def __init__(self, *modules):
        super().__init__()
        for module in modules:
            self.append(module)

    def __iter__(self):
        return iter(self.children())


class ModuleList(_nn.ModuleList):
    """A list of modules registered as children "0", "1", ..."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def __iter__(self):
        return iter(self.children())

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self
