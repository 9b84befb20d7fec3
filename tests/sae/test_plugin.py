"""The plugin: every SAELens SAE class gets `label_features`, and nothing else about SAELens
changes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.sae import SAE, SAEMetadata

import saelens_tokenlabel  # noqa: F401  (installs the plugin)
from saelens_tokenlabel.run import plugin
from saelens_tokenlabel.sae import CacheConfig, build_activation_cache
from saelens_tokenlabel.sae.subject import Subject

from .planted import D_MODEL, HOOK, MODEL_NAME

ARCHITECTURES = ("standard", "topk", "jumprelu", "gated", "transcoder", "skip_transcoder",
                 "jumprelu_transcoder", "jumprelu_skip_transcoder", "abstopk",
                 "matching_pursuit")


def make(architecture: str, d_sae: int = 16, seed: int = 0) -> SAE:
    sae_cls, cfg_cls = SAE_CLASS_REGISTRY[architecture]
    kw = {"d_in": D_MODEL, "d_sae": d_sae, "metadata": SAEMetadata(
        hook_name=HOOK, model_name=MODEL_NAME, context_size=32, prepend_bos=True)}
    if "transcoder" in architecture:
        kw.update(d_out=D_MODEL, apply_b_dec_to_input=False)
    if "topk" in architecture:
        kw["k"] = 3
    torch.manual_seed(seed)
    sae = sae_cls(cfg_cls(**kw))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name.startswith("W_enc"):
                p.copy_(torch.randn_like(p))
            if name == "threshold":
                p.fill_(0.5)
    return sae


def test_every_sae_class_has_label_features():
    classes = [c for c, _ in SAE_CLASS_REGISTRY.values()]
    classes += [c for c, _ in SAE_TRAINING_CLASS_REGISTRY.values()]
    assert len(classes) >= 15
    for cls in classes:
        assert issubclass(cls, SAE)
        assert cls.label_features is plugin.label_features, cls
        assert "label_features" not in vars(cls) or cls is SAE
    for arch in ("standard", "topk", "jumprelu", "gated", "transcoder"):
        sae = make(arch)
        assert sae.label_features.__func__ is plugin.label_features
        assert "arXiv 2504.00754" in type(sae).label_features.__doc__


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cache_encodes_with_each_architecture(architecture, subject, toy_corpus, tmp_path):
    """The cache is each class's own `encode` on the hook's activations, whatever the class
    (TopK included, whose encode may return a sparse tensor)."""
    sae = make(architecture)
    cache = build_activation_cache(Subject.of(subject, sae), toy_corpus[:12], None,
                                   CacheConfig(cache_dir=tmp_path, batch_size=5))
    contexts = cache.contexts(range(cache.n_contexts))
    for c in (0, 7):
        with torch.no_grad():
            want = sae.encode(subject.W_E[torch.tensor(contexts[c])])
        if want.is_sparse:
            want = want.to_dense()
        got = torch.zeros_like(want)
        for f in range(sae.cfg.d_sae):
            ctx, pos, val = cache.feature_activations(f)
            got[pos[ctx == c], f] = val[ctx == c]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert (want != 0).any()


def test_label_features_runs_on_a_topk_sae(subject, toy_corpus, fast_evaluator, tmp_path):
    from saelens_tokenlabel import LabelConfig, LabelSet
    from saelens_tokenlabel.sae import ExampleConfig

    sae = make("topk", d_sae=8)
    labels = sae.label_features(subject, fast_evaluator, toy_corpus, features=[0, 5],
                                config=LabelConfig(steps=2, batch_size=4),
                                cache=CacheConfig(cache_dir=tmp_path),
                                examples=ExampleConfig(n_top=3, n_quantile=2, n_random=3,
                                                       n_near_miss=2))
    assert isinstance(labels, LabelSet) and list(labels) == [0, 5]
    assert labels.info["architecture"] == "topk"



def test_label_features_takes_a_run_dir_and_resumes(subject, toy_corpus, fast_evaluator,
                                                    tmp_path):
    from saelens_tokenlabel import LabelConfig
    from saelens_tokenlabel.run import RunStore, load_labelset
    from saelens_tokenlabel.sae import ExampleConfig

    sae = make("topk", d_sae=8)
    kw = dict(config=LabelConfig(steps=2, batch_size=4), cache=CacheConfig(cache_dir=tmp_path),
              examples=ExampleConfig(n_top=3, n_quantile=2, n_random=3, n_near_miss=2),
              run_dir=tmp_path / "run")
    first = sae.label_features(subject, fast_evaluator, toy_corpus, features=[0, 5], **kw)
    assert load_labelset(tmp_path / "run").to_dict()["results"] == first.to_dict()["results"]
    again = sae.label_features(subject, fast_evaluator, toy_corpus, features=[5], **kw)
    assert again[5].to_dict() == first[5].to_dict()
    # Resumed, not labeled again: each feature was started once in the store.
    with RunStore(tmp_path / "run", create=False) as store:
        assert {r["feature"]: r["starts"] for r in store.rows()} == {0: 1, 5: 1}
    assert "run_dir" in type(sae).label_features.__doc__


SNAPSHOT = """
import json, sys
import sae_lens
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.sae import SAE

# An SAE saved with labels attached loads in plain SAELens, the summary in its metadata.
loaded = SAE.load_from_disk(sys.argv[1])
assert "saelens_tokenlabel" not in sys.modules and not hasattr(loaded, "label_features")
labels = loaded.cfg.metadata["tokenlabel"]["labels"]

def snap():
    classes = {c.__name__: c for c, _ in
               list(SAE_CLASS_REGISTRY.values()) + list(SAE_TRAINING_CLASS_REGISTRY.values())}
    classes["SAE"] = SAE
    return {
        "classes": {n: {k: repr(v) for k, v in vars(c).items() if k != "__doc__"}
                    for n, c in classes.items()},
        "registry": sorted(SAE_CLASS_REGISTRY), "training": sorted(SAE_TRAINING_CLASS_REGISTRY),
        "module": sorted(vars(sae_lens)),
    }

before = snap()
import saelens_tokenlabel
after = snap()
# Light import: Ray and its executor load only when a run asks for them.
lazy = sorted(m for m in sys.modules if m == "ray" or m.startswith(("ray.",
              "saelens_tokenlabel.run.ray_backend")))
print(json.dumps({"before": before, "after": after, "labels": labels, "lazy": lazy}))
"""


@pytest.mark.subprocess
def test_importing_the_plugin_changes_nothing_else_in_saelens(quick_labels, tmp_path):
    """In a fresh interpreter: cfg.json with labels loads without the plugin; importing the
    plugin then adds `label_features` to `SAE`, wraps `save_model`/`load_from_disk`, and
    registers the g-SAE architecture, and leaves every other attribute, class, registry entry
    and module name as it was."""
    from .planted import planted_sae

    sae = planted_sae()
    quick_labels.attach(sae)
    sae.save_model(tmp_path / "sae")
    out = subprocess.run([sys.executable, "-c", SNAPSHOT, str(tmp_path / "sae")],
                         capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["labels"]["0"]["label"] == quick_labels[0].label
    before, after = data["before"], data["after"]
    assert sorted(after["registry"]) == sorted([*before["registry"], "gsae"])
    assert before["training"] == after["training"]
    assert before["module"] == after["module"]
    for name in before["classes"]:
        b, a = before["classes"][name], after["classes"][name]
        if name != "SAE":
            assert a == b, name
            continue
        assert set(a) - set(b) == {"label_features"}
        changed = {k for k in b if a[k] != b[k]}
        assert changed == {"save_model", "load_from_disk"}
    assert data["lazy"] == []


def test_save_model_without_labels_writes_saelens_files_byte_for_byte(tmp_path):
    sae = make("standard")
    sae.save_model(tmp_path / "with")
    plugin.uninstall()
    try:
        assert not hasattr(SAE, "label_features")
        sae.save_model(tmp_path / "without")
    finally:
        plugin.install()
    for name in ("cfg.json", "sae_weights.safetensors"):
        assert (tmp_path / "with" / name).read_bytes() == \
            (tmp_path / "without" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "with").iterdir()) == \
        sorted(p.name for p in (tmp_path / "without").iterdir())


def test_install_is_idempotent_and_refuses_to_clobber():
    original_save = SAE.save_model
    plugin.install()
    assert SAE.save_model is original_save
    plugin.uninstall()
    try:
        SAE.label_features = lambda self: None
        with pytest.raises(RuntimeError, match="refusing to overwrite"):
            plugin.install()
    finally:
        del SAE.label_features
        plugin.install()
    assert plugin.is_installed()


ORDER = """
import json, sys
first = sys.argv[1]
if first == "sae_lens":
    from sae_lens import SAE
    import saelens_tokenlabel
else:
    import saelens_tokenlabel
    light = not any(m in sys.modules for m in ("torch", "sae_lens", "transformer_lens"))
    from sae_lens import SAE
from sae_lens.registry import SAE_CLASS_REGISTRY
from saelens_tokenlabel.run import plugin, plugin_hook
plugin_hook.install_now_or_on_import()  # again: a no-op
print(json.dumps({
    "light": first == "sae_lens" or light,
    "installed": plugin.is_installed(),
    "same": SAE.label_features is plugin.label_features,
    "topk": SAE_CLASS_REGISTRY["topk"][0].label_features is plugin.label_features,
    "finders": [type(f).__name__ for f in sys.meta_path if "SAEFinder" in type(f).__name__],
    "loader": type(sys.modules["sae_lens.saes.sae"].__loader__).__name__,
}))
"""


@pytest.mark.parametrize("first", ["sae_lens", "saelens_tokenlabel"])
def test_plugin_is_installed_whichever_is_imported_first(first):
    """`import saelens_tokenlabel` stays light (no SAELens, no torch); `SAE` still gets
    `label_features`, at once when SAELens is loaded, else when it is; the import hook then
    removes itself and leaves SAELens's module with its own loader."""
    out = subprocess.run([sys.executable, "-c", ORDER, first], capture_output=True,
                         text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"light": True, "installed": True, "same": True, "topk": True,
                   "finders": [], "loader": "SourceFileLoader"}
