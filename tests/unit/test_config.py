import pytest

from flows.config import PipelineConfig, load_config
from tasks.errors import ConfigError


def test_defaults_describe_the_demo_run():
    cfg = load_config()
    assert cfg.train.privacy.enabled and cfg.train.privacy.target_epsilon == 8.0
    assert cfg.ingest.path.name == "tickets.csv"
    assert "message" in cfg.contract.names


def test_negative_epsilon_fails_naming_the_field():
    with pytest.raises(ConfigError, match=r"train\.privacy\.target_epsilon"):
        load_config(overrides=["train.privacy.target_epsilon=-1"])


def test_unknown_field_is_rejected():
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        load_config(overrides=["train.epoch=3"])


def test_yaml_file_then_set_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 5\n  batch_size: 32\nvalidate:\n  max_quarantine_rate: 0.2\n")
    cfg = load_config(f, ["train.epochs=2"])
    assert (cfg.train.epochs, cfg.train.batch_size) == (2, 32)
    assert cfg.validate_.max_quarantine_rate == 0.2


@pytest.mark.parametrize("bad", ["train.epochs", "=3", "nosuchsection.x=1"])
def test_malformed_overrides_fail(bad):
    with pytest.raises(ConfigError):
        load_config(overrides=[bad])


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "b.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_config_digest_changes_with_content():
    assert PipelineConfig().digest() == load_config().digest()
    assert load_config(overrides=["train.epochs=9"]).digest() != PipelineConfig().digest()
