"""One registry shape for every table: names, lazily imported "module:name" entries, paths that were
never registered, and errors that name the table, the bad key and what was expected."""

import sys

import pytest

from rpp_hub.registry import Registry, import_path, is_import_path


def test_a_registered_path_is_imported_on_first_use_and_in_never_imports():
    sys.modules.pop("colorsys", None)
    table = Registry("colour function", callable, entries={"hls": "colorsys:rgb_to_hls"})
    assert "hls" in table and "colorsys" not in sys.modules  # `in` and registration import nothing
    assert table.resolve("hls")(1.0, 0.0, 0.0) == (0.0, 0.5, 1.0)
    assert list(table) == ["hls"] and len(table) == 1 and table["hls"] is table.resolve("hls")


def test_paths_that_were_never_registered_resolve_only_when_allowed():
    open_table = Registry("function", callable)
    assert open_table.resolve("os.path:join") is import_path("os.path:join")
    closed = Registry("task source", callable, paths=False, entries={"a": "os.path:join"})
    with pytest.raises(ValueError, match=r"unknown task source 'os.path:basename'; expected one of \('a',\)$"):
        closed.resolve("os.path:basename")


def test_errors_name_the_table_the_key_and_what_was_expected():
    table = Registry("sampler", lambda c: isinstance(c, type) and issubclass(c, int), kind_name="subclass of int",
                     entries={"bool": bool})
    with pytest.raises(ValueError, match=r"unknown sampler 'sglang'; expected one of \('bool',\) or a 'module:name' "
                                         r"path to a subclass of int"):
        table.resolve("sglang")
    with pytest.raises(ValueError, match=r"sampler 'os.path:join' names <function join .*>, not a subclass of int"):
        table.resolve("os.path:join")
    with pytest.raises(ValueError, match=r"sampler 'x': 'server' is neither a subclass of int nor a 'module:name'"):
        table.register("x", "server")
    with pytest.raises(ValueError, match=r"sampler 'y' names <class 'str'>, not a subclass of int"):
        table.register("y", str)
    with pytest.raises(ValueError, match=r"'no_such_module_xyz:f' could not be imported"):
        table.resolve("no_such_module_xyz:f")
    table.register("late", "no_such_module_xyz:f")  # a path is checked when it is first used
    table.unregister("late")
    assert "late" not in table


def test_instance_tables_check_the_entry_type():
    table = Registry("number", float, entries={"pi": 3.14})
    with pytest.raises(ValueError, match=r"number 'two' names 2, not a builtins.float"):
        table.register("two", 2)
    assert is_import_path("a.b:c") and not is_import_path("a.b") and not is_import_path("http://x:80")
