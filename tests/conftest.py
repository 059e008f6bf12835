"""Test-wide isolation: every test session gets its own MLflow store, Prefect home and key.

Set before any test module imports prefect or mlflow, which read these on first use.
"""

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

_SESSION = Path(tempfile.mkdtemp(prefix="privgen-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION / "prefect")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION / 'mlflow.db'}"
os.environ.pop("PREFECT_API_URL", None)
os.environ["PRIVGEN_PSEUDONYM_KEY"] = secrets.token_hex(32)

from flows.environment import apply_defaults  # noqa: E402

apply_defaults(_SESSION)

REPO = Path(__file__).resolve().parents[1]
DEMO_CSV = REPO / "data" / "demo" / "tickets.csv"
PLANTED = REPO / "data" / "demo" / "planted_pii.json"


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION


@pytest.fixture(scope="session")
def demo_csv() -> Path:
    return DEMO_CSV


@pytest.fixture(scope="session")
def demo_frame():
    from tasks.ingest import IngestConfig, read_source

    return read_source(DEMO_CSV, IngestConfig())


@pytest.fixture(scope="session")
def planted() -> dict:
    import json

    return json.loads(PLANTED.read_text())


@pytest.fixture
def make_model():
    """A factory of registered models whose versions 1, 2, … carry the given tags; the
    versions point at a placeholder artifact, so no training is needed."""
    import uuid

    def make(client, *versions: dict) -> str:
        name = f"test-{uuid.uuid4().hex[:10]}"
        run = client.create_run("0")
        client.log_text(run.info.run_id, "placeholder", "model/MLmodel")
        client.create_registered_model(name)
        for tags in versions:
            client.create_model_version(name, source=f"{run.info.artifact_uri}/model",
                                        run_id=run.info.run_id, tags=tags)
        return name

    return make


@pytest.fixture(scope="session")
def pretrained_dir(tmp_path_factory) -> Path:
    """A small GPT-2 with tied embeddings and its own byte-level BPE tokenizer, trained on public
    text (the Zen of Python), saved in save_pretrained layout: a stand-in for a hub model."""
    import codecs
    import this

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    public = codecs.decode(this.s, "rot13").splitlines()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(public, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=384, n_embd=32, n_layer=2,
                        n_head=2, tie_word_embeddings=True,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    directory = tmp_path_factory.mktemp("pretrained") / "tiny-gpt2"
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@dataclass(frozen=True)
class TinyLM:
    """A saved causal-LM model folder and what it was trained under."""

    folder: Path  # as the train stage writes it, family.json included
    legacy: Path  # the same as saved before family.json existed
    contract: object  # tasks.contract.DataContract: product, rating 1-5, message
    fields: tuple[str, ...]


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> TinyLM:
    """An untrained byte-level GPT-2 (one layer) with its replay index and release rules."""
    import torch

    from models import causal_lm
    from models.causal_lm_family import CausalLM
    from models.records import RecordCodec
    from models.replay import ReplayIndex
    from models.tokenizer import ByteTokenizer
    from tasks import release
    from tasks.contract import ColumnSpec, DataContract, DType, Role

    codec = RecordCodec(("product", "rating", "message"), ("rating",), (1,))
    contract = DataContract(columns=(
        ColumnSpec(name="product", role=Role.CATEGORY, allowed=("Nimbus", "Pulse")),
        ColumnSpec(name="rating", dtype=DType.INTEGER, role=Role.NUMERIC, min=1, max=5),
        ColumnSpec(name="message", role=Role.TEXT)))
    cfg = causal_lm.LMConfig(n_layer=1, n_head=2, n_embd=16, block_size=48)
    replay = ReplayIndex.build(["the parcel never arrived and nobody answered my three calls"])
    meta = {"codec": codec.to_dict(), "tokenizer": "bytes", "model_config": cfg.model_dump(),
            "replay": {"ngram_words": 8, "ngrams": len(replay), "columns": ["message"]}}

    def extra(tmp):
        replay.save(tmp)
        release.write(contract, codec.fields, tmp)

    root = tmp_path_factory.mktemp("tiny-lm")
    for directory in (root / "model", root / "legacy"):
        torch.manual_seed(0)
        causal_lm.save(causal_lm.build(cfg, ByteTokenizer()), directory, meta, extra=extra)
    CausalLM.from_folder(root / "model").save(root / "model")
    return TinyLM(root / "model", root / "legacy", contract, codec.fields)
