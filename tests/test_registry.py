"""Every registered experiment resolves, names itself consistently and builds its configs."""

from __future__ import annotations

import json

import pytest

from hesslab.errors import ConfigurationError
from hesslab.experiments import EXPERIMENTS, get_experiment, list_experiments


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_spec_resolves_and_builds_configs(name):
    spec = EXPERIMENTS[name]
    assert spec.name == name
    assert spec.title and spec.paper and spec.description
    assert 0 < spec.smoke_seconds <= spec.full_seconds
    for smoke in (True, False):
        cfg = spec.config(smoke=smoke)
        json.dumps(cfg)  # JSON-ready: it is written into config.json


def test_registry_lookup():
    assert [s["name"] for s in list_experiments()] == list(EXPERIMENTS)
    with pytest.raises(ConfigurationError, match="known"):
        get_experiment("no-such-experiment")
