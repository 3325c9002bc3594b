import pytest
from todo.store import TodoStore


def test_add_and_pending():
    store = TodoStore()
    store.add("one")
    store.add("two")
    store.complete(1)
    assert [item.title for item in store.pending()] == ["two"]


def test_empty_title_rejected():
    with pytest.raises(ValueError):
        TodoStore().add("   ")


def test_persists_to_file(tmp_path):
    path = tmp_path / "todo.json"
    TodoStore(path).add("saved")
    assert TodoStore(path).items[0].title == "saved"
