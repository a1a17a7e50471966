"""Embedding spaces with real weights (MobileNet, MiniLM) and the real OpenCLIP loader."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clip_embedder.indexing.describe import describe_detections
from clip_embedder.models.clip import ClipEmbedder
from tests.helpers import IMAGES


def test_vectors_are_normalised_with_the_identity_dim(embedders):
    ims = [Image.open(IMAGES / "000000000009.jpg"), Image.open(IMAGES / "000000000025.jpg")]
    for name, e in embedders.items():
        v = e.embed_texts(["a bowl", "a giraffe"]) if e.source == "description" else e.embed_images(ims)
        assert v.shape == (2, e.identity.dim) and v.dtype == np.float32, name
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4), name
        assert not np.allclose(v[0], v[1]), name


def test_mobilenet_is_a_real_embedder(embedders):
    m = embedders["mobilenet"]
    a = Image.open(IMAGES / "000000000009.jpg")
    v = m.embed_images([a, a.transpose(Image.FLIP_LEFT_RIGHT), Image.open(IMAGES / "000000000025.jpg")])
    assert v[0] @ v[1] > v[0] @ v[2]  # a mirrored photo is closer than a different one


def test_text_space_ranks_descriptions(embedders):
    t = embedders["text"]
    docs = t.embed_texts([describe_detections(["person", "handbag"]), describe_detections(["car", "car"]),
                          describe_detections(["giraffe"])])
    q = t.embed_texts(["handbag", "cars on a street", "zoo animal"])
    assert list((q @ docs.T).argmax(axis=1)) == [0, 1, 2]




def test_clip_loads_local_checkpoint_and_shares_one_space(embedders, tiny_clip):
    c = embedders["clip"]
    assert c.identity.model == "open_clip:tiny-test-clip" and c.identity.dim == 64
    assert len(c.identity.weights) == 64  # sha256 of the local checkpoint
    img = c.embed_images([Image.open(IMAGES / "000000000009.jpg")])
    txt = c.embed_texts(["a bowl of broccoli"])
    assert img.shape == txt.shape == (1, 64)


def test_clip_hub_tag_offline_is_a_clear_error(tiny_clip):
    e = ClipEmbedder("tiny-test-clip", "no-such-hub-tag", tiny_clip[0])
    with pytest.raises(RuntimeError, match="CLIP_PRETRAINED"):
        e.load()


def test_text_embeddings_of_repeated_texts_are_computed_once(embedders):
    """Descriptions repeat (every crop of a class has the same one): each distinct text goes through the
    model once, and the vectors equal those of a fresh, uncached embedding."""
    from clip_embedder.models.text import TextEmbedder

    t = embedders["text"]
    z, k = "a photo of a zebra (cache test)", "a photo of a kite (cache test)"
    texts = [z, k, z, k] * 5
    hits, misses = getattr(t, "cache_hits", 0), getattr(t, "cache_misses", 0)
    v = t.embed_texts(texts)
    assert t.cache_misses - misses == 2 and t.cache_hits - hits == 18
    fresh = TextEmbedder(t.model_path, runtime="torch").load()
    ref = fresh._model.encode([z, k], normalize_embeddings=True)
    assert np.allclose(v[0], ref[0], atol=1e-6) and np.allclose(v[3], ref[1], atol=1e-6)
    assert np.array_equal(v[0], v[2]) and v.shape == (20, t.identity.dim)
    again = t.embed_texts([k])
    assert t.cache_misses - misses == 2 and np.array_equal(again[0], v[1])


def test_mobilenet_on_onnx_runtime_gives_the_tflite_features(tmp_path):
    """MOBILENET_RUNTIME=onnx runs the same quantised graph converted once (cached by sha256) on ONNX Runtime:
    the uint8 features of real whole images and crops equal TFLite's, so the space identity is unchanged."""
    from PIL import Image

    from clip_embedder.models.mobilenet import MobileNetEmbedder
    from tests.helpers import IMAGES, MOBILENET

    ims = [Image.open(p).convert("RGB") for p in sorted(IMAGES.glob("*.jpg"))[:24]]
    ims += [im.crop((10, 20, 10 + im.width // 3, 20 + im.height // 2)) for im in ims[:24]]
    tflite = MobileNetEmbedder(MOBILENET, runtime="tflite").load()
    onnx = MobileNetEmbedder(MOBILENET, runtime="onnx", export_dir=tmp_path).load()
    assert (tflite.runtime, onnx.runtime) == ("tflite", "onnx") and onnx.identity == tflite.identity
    assert len(list(tmp_path.glob("mobilenet_*.onnx"))) == 1
    a, b = tflite.features(ims), onnx.features(ims)
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape == (48, 1024)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1 and (a == b).mean() > 0.999
    auto = MobileNetEmbedder(MOBILENET, runtime="auto", export_dir=tmp_path).load()
    assert auto.runtime == "onnx"


def test_text_space_on_onnx_runtime_matches_torch(embedders, tmp_path):
    """TEXT_RUNTIME=onnx: the sentence-transformers pipeline exported once (cached in EXPORT_DIR by sha256) gives
    the torch vectors (cosine ≥ 0.999) for descriptions, queries and a batch of mixed lengths; same identity."""
    from clip_embedder.indexing.describe import describe_image, describe_object
    from clip_embedder.models.text import TextEmbedder

    texts = [describe_object("dog", ["Labrador retriever"]), describe_image(["person", "person", "bus"], [], "EXIT"),
             "zebra", "a red handbag on a bench", "스파게티 sign", "x " * 300]  # the last one is truncated
    torch_ = TextEmbedder(embedders["text"].model_path, runtime="torch").load()
    onnx = TextEmbedder(embedders["text"].model_path, runtime="onnx", export_dir=tmp_path).load()
    assert torch_.runtime == "torch" and onnx.runtime == "onnx" and onnx.identity == torch_.identity
    a, b = torch_.embed_texts(texts), onnx.embed_texts(texts)
    assert b.shape == (len(texts), onnx.identity.dim) and b.dtype == np.float32
    assert (a * b).sum(axis=1).min() >= 0.999
    assert np.allclose(onnx.embed_texts(texts[2:3]), b[2:3], atol=1e-5)  # alone = in a batch (padding masked)
    assert len(list(tmp_path.glob("text_*.onnx"))) == 1
    again = TextEmbedder(embedders["text"].model_path, runtime="auto", export_dir=tmp_path).load()
    assert again.runtime == "onnx" and np.allclose(again.embed_texts(texts), b, atol=1e-6)  # the cached export
    # a start from the export loads neither sentence-transformers' model nor transformers' tokenizer: the saved fast
    # tokenizer gives exactly the token ids and masks the model's own tokenizer gives
    assert not hasattr(again, "_model") and len(list(tmp_path.glob("text_*.tokenizer.json"))) == 1
    for batch in (texts, texts[:1], texts[2:4]):
        got, want = again._tokenize(batch, "np"), onnx._tokenize(batch, "np")
        assert np.array_equal(got["input_ids"], want["input_ids"])
        assert np.array_equal(got["attention_mask"], want["attention_mask"])
    assert again._tokenize(texts[-1:], "np")["input_ids"].shape[1] == torch_._model.max_seq_length  # truncated


def test_clip_towers_on_onnx_runtime_match_torch(tiny_clip, tmp_path):
    """CLIP_RUNTIME=onnx: both OpenCLIP towers exported once (the tests' tiny ViT, seeded weights, loaded through
    OpenCLIP's own loader) give the torch vectors within a cosine of 0.999, alone and in batches; same identity."""
    cfg, ckpt = tiny_clip
    paths = sorted(IMAGES.glob("*.jpg"))[:6]
    images = [Image.open(p).convert("RGB") for p in paths]
    texts = ["a photo of a dog", "zebra", "two people on a red bus near the station"]
    ref = ClipEmbedder("tiny-test-clip", str(ckpt), cfg, runtime="torch").load()
    onnx = ClipEmbedder("tiny-test-clip", str(ckpt), cfg, runtime="onnx", export_dir=tmp_path).load()
    assert ref.runtime == "torch" and onnx.runtime == "onnx" and onnx.identity == ref.identity
    assert len(list(tmp_path.glob("clip_*.onnx"))) == 2
    pairs = ((ref.embed_images(images), onnx.embed_images(images)), (ref.embed_texts(texts), onnx.embed_texts(texts)))
    for a, b in pairs:
        assert a.shape == b.shape and b.dtype == np.float32 and (a * b).sum(axis=1).min() >= 0.999
    assert np.allclose(onnx.embed_images(images[:1]), onnx.embed_images(images)[:1], atol=1e-5)
