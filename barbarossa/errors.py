"""Errors a user fixes — a setting, a file, a selection — each printed as a headline and one line.

They are MetaflowExceptions because Metaflow prints those without a traceback, whether a step, a Config
parser or the command line raises one; and ValueErrors, so code that catches bad values still does.
"""

from __future__ import annotations

from metaflow.exception import MetaflowException


class UserError(MetaflowException, ValueError):
    """Base of the errors whose message says what is wrong and what to do; no traceback helps there."""

    headline = "Barbarossa"
