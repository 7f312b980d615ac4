"""The markers are enforced: a test that compiles with inductor without `@pytest.mark.compile` fails, naming it."""

import conftest
import torch


def test_an_unmarked_test_compiling_a_model_with_inductor_is_refused_and_another_backend_is_not(monkeypatch):
    monkeypatch.undo()  # this test's own patch, over the real torch.compile, in place of the autouse fixture's
    refused = []
    conftest._refuse_inductor(monkeypatch, refused.append)
    torch.nn.Linear(2, 2).compile(backend="eager")  # a trace only: allowed in the fast tier
    torch.compile(lambda x: x)  # one function, as transformers compiles FlexAttention
    assert refused == []
    torch.nn.Linear(2, 2).compile()  # nn.Module.compile goes through torch.compile: inductor by default
    torch.compile(torch.nn.Linear(2, 2))
    assert refused == ["compile", "compile"]


def test_the_compile_marker_is_declared_for_every_test_that_compiles_with_inductor():
    assert "compile" in conftest.NEEDS
