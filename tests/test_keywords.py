"""Each call's keyword options are written once (corework/api/keywords.py), yet help()
lists every one with its default, and a misspelt one is refused as Python would."""

from __future__ import annotations

import asyncio
import inspect
import pydoc
import sys
import typing

import pytest

import corework as cw
from corework.api.keywords import DEFAULTS, MapKeywords, PoolKeywords
from tests.helpers import square

CALLS = [("map", cw.map, MapKeywords), ("imap", cw.imap, MapKeywords),
         ("aimap", cw.aimap, MapKeywords), ("Pool", cw.Pool, PoolKeywords)]


@pytest.mark.parametrize(("name", "call", "keywords"), CALLS, ids=[c[0] for c in CALLS])
def test_help_shows_every_option_with_its_default(name, call, keywords):
    parameters = inspect.signature(call).parameters
    for option in keywords.__annotations__:
        assert parameters[option].default == DEFAULTS[option], option
        assert parameters[option].kind is inspect.Parameter.KEYWORD_ONLY
    shown = pydoc.render_doc(call)
    assert all(f"{option}:" in shown for option in keywords.__annotations__)
    assert not [p for p in parameters if p.startswith("_") or p == "options"]
    if sys.version_info >= (3, 11):  # typing.Unpack: the hints resolve at run time
        assert typing.get_type_hints(call.__init__ if call is cw.Pool else call)["options"]


def test_only_the_options_of_each_call_are_listed():
    assert "chunksize" in inspect.signature(cw.map).parameters
    assert "chunksize" not in inspect.signature(cw.Pool).parameters
    assert "initializer" not in inspect.signature(cw.map).parameters
    assert list(inspect.signature(cw.map).parameters)[:2] == ["fn", "items"]
    assert next(iter(inspect.signature(cw.Pool).parameters)) == "workers"


def test_a_misspelt_option_is_refused_naming_it():
    with pytest.raises(TypeError, match=r"^map\(\) got an unexpected keyword argument 'timout'$"):
        cw.map(square, [1], timout=3)
    with pytest.raises(TypeError, match=r"^imap\(\) got an unexpected keyword argument 'worker'$"):
        cw.imap(square, [1], worker=3)
    with pytest.raises(TypeError, match=r"^aimap\(\) got an unexpected keyword argument 'x'$"):
        cw.aimap(square, [1], x=1)
    with pytest.raises(TypeError, match=r"^Pool.__init__\(\) got an unexpected keyword arg"):
        cw.Pool(2, chunksize=3)


def test_options_given_and_defaulted_reach_the_run():
    assert cw.map(square, range(5), engine="thread", workers=2, chunksize=2) == \
        [x * x for x in range(5)]
    assert sorted(cw.imap(square, range(5), engine="thread", ordered=False)) == \
        [x * x for x in range(5)]
    assert cw.map(square, ["x"], engine="thread", errors="return")[0].__class__ is TypeError
    with cw.Pool(1, engine="thread", retries=1) as pool:
        assert pool.submit(square, 4).result() == 16

    async def collect():
        return [value async for value in cw.aimap(square, range(3), engine="thread")]

    assert asyncio.run(collect()) == [0, 1, 4]
