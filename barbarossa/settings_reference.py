"""docs/settings.md: every key of every file a user writes — profile, infra config, roster entry, language pack,
self-instruct profile, teacher.

Each kind of file declares its keys as settings sections where it is read (config.py, infra/compute.py,
models/roster.py, languages.py, selfinstruct/settings.py, llm/settings.py); this module only
gathers them, at the top of the layout because config.py, a foundation module, cannot import the stages that declare
the others. `python -m barbarossa.settings_reference > docs/settings.md` regenerates the page; a test fails when it
is stale.
"""

from __future__ import annotations

from barbarossa import config, languages
from barbarossa.infra import compute
from barbarossa.llm.settings import Teacher
from barbarossa.models import roster
from barbarossa.selfinstruct import settings as selfinstruct

DOCUMENTS = (
    config.PROFILE,
    config.Document(
        "Infra config",
        "configs/infra/<name>.toml",
        "Where fine-tunes run and how big their boxes are; read when the flow is loaded or compiled "
        "(`--config infra <file>`). The flow holds it as given (only the keys it states).",
        {config.TOP_LEVEL: compute.Infra},
    ),
    config.Document(
        "Roster entry",
        "configs/rosters/<name>.toml",
        "A roster file has `name`, `description` and its entries: `[[base]]` models and `[[candidate]]` "
        "recipes. Every base also runs untuned, as the baseline its candidates must beat.",
        {"[[base]]": roster.Base, "[[candidate]]": roster.Candidate},
    ),
    config.Document(
        "Language pack",
        "configs/languages/<code>.toml",
        "Everything that makes a run Azerbaijani, Kazakh or Turkish (docs/languages.md). Files it names are "
        "relative to the project root.",
        {config.TOP_LEVEL: languages.Pack},
    ),
    config.Document(
        "Self-instruct profile",
        "configs/selfinstruct/<name>.toml",
        "How a teacher model is asked for tasks in a pack's language and which are kept (docs/selfinstruct.md).",
        {"[selfinstruct]": selfinstruct.SelfInstruct},
    ),
    config.Document(
        "Teacher",
        "[teacher]",
        "The LLM that writes or judges data, a table of the files that use one (docs/llm.md): an "
        "OpenAI-compatible endpoint (`barbarossa serve`, vLLM, a hosted API) or a local transformers model.",
        {"[teacher]": Teacher},
    ),
)


def reference() -> str:
    """The whole reference, as docs/settings.md holds it."""
    return config.reference(DOCUMENTS)


if __name__ == "__main__":
    print(reference(), end="")
