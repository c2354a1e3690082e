"""Tooling: datasets (`data`), figures (`plots`) and provenance records (`provenance`), which import
nothing from the other layers, and the `jamem` command line (`cli`), which sits on top of them all."""

from . import data as data
from . import plots as plots
from . import provenance as provenance
