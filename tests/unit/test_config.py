import pytest

from selfattn.config import ConfigError, apply_overrides, from_dict, to_dict
from selfattn.lm import LMRunConfig
from selfattn.recipes import get_recipe


def test_overrides_apply_and_keep_types(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    cfg = apply_overrides(LMRunConfig(), ["model.n_layer=3", "train.lr=3e-4", "train.compile=false",
                                          "model.n_kv_head=none", f"data.path={tmp_path / 'x.txt'}"])
    assert cfg.model.n_layer == 3 and cfg.train.lr == 3e-4 and cfg.train.compile is False
    assert cfg.model.n_kv_head is None and cfg.data.corpus == "file"


@pytest.mark.parametrize("override, fragment", [
    ("model.n_layers=3", "unknown config key 'model.n_layers'"),
    ("modle.n_layer=3", "unknown config key"),
    ("model.n_layer=three", "expected an int"),
    ("train.lr=fast", "expected a float"),
    ("train.compile=maybe", "expected a bool"),
    ("model.n_layer", "key=value"),
    ("model=3", "is a section"),
    ("model.n_layer=0", "model.n_layer=0 is out of range"),
    ("model.position=spiral", "model.position='spiral' is not allowed"),
    ("train.batch_size=10", "divisible"),  # with grad_accum=3 below
])
def test_bad_overrides_name_the_key_and_value(override, fragment):
    base = apply_overrides(LMRunConfig(), ["train.grad_accum=3", "train.batch_size=12"])
    with pytest.raises(ConfigError, match=None) as e:
        apply_overrides(base, [override])
    assert fragment in str(e.value)


def test_json_round_trip_and_unknown_keys():
    cfg = get_recipe("shakespeare-char").default_config()
    assert from_dict(LMRunConfig, to_dict(cfg)) == cfg
    d = to_dict(cfg)
    d["model"]["n_layerz"] = 2
    with pytest.raises(ConfigError, match="n_layerz"):
        from_dict(LMRunConfig, d)
    d = to_dict(cfg)
    d["train"]["max_steps"] = "10"
    with pytest.raises(ConfigError, match="max_steps"):
        from_dict(LMRunConfig, d)


def test_unknown_recipe():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        get_recipe("nope")
