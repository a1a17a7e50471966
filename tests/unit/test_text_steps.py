"""Text search's steps, each alone: parsing, lexical terms, per-signal rankings, the relevance decision."""
from __future__ import annotations

import math

import pytest

from clip_embedder.models.tagger import label_words, name_words
from clip_embedder.search.records import QueryError
from clip_embedder.search.text import (
    MAX_QUERY_CHARS,
    ImageRanking,
    best_items,
    colour_pairs,
    conjunction_parts,
    content_groups,
    decide,
    nothing_found,
    parse_query,
    phrase_ranking,
    query_terms,
    rank_images,
    sentence_min_groups,
)


def test_query_terms():
    assert query_terms("a photo of two Dogs and boxes") == ["two", "dogs", "dog", "boxes", "box", "boxe"]
    assert query_terms("김치찌개 사진") == ["김치찌개", "사진"]
    # a name of several words is indexed as its compound (and its head): adjacent words form it in the query
    assert query_terms("hot dogs") == ["hot", "hotdogs", "hotdog", "dogs", "dog"]


def test_names_of_several_words_are_phrase_aware_keywords():
    """"dog" must not match a hot dog: a lexicalised compound ("hot dog, hotdog") keeps no head word; a plain one
    keeps its head ("golden retriever" is a retriever)."""
    assert name_words(["hot dog", "hotdog", "red hot"]) == ["hotdog", "redhot", "hot"]
    assert name_words(["golden retriever"]) == ["goldenretriever", "retriever"]
    assert "dog" not in label_words("hot dog").split() and "glass" in label_words("wine glass").split()


def test_korean_ocr_pieces_are_joined_for_lexical_search():
    from clip_embedder.models.ocr import lexical_text

    assert lexical_text("『 김 치찌개") == "『 김 치찌개 김치찌개"
    assert lexical_text("EXIT") == "EXIT"


def test_parse_query_splits_quoted_phrases_from_the_rest():
    q = parse_query('  a red bus "EXIT" “Pharmacy” ')
    assert q.text == 'a red bus "EXIT" “Pharmacy”' and q.phrases == ("EXIT", "Pharmacy") and q.rest == "a red bus"
    plain = parse_query("a dog")
    assert plain.phrases == () and plain.rest == "a dog"
    only = parse_query('"EXIT"')
    assert only.phrases == ("EXIT",) and only.rest == ""


@pytest.mark.parametrize("query", ["", "   ", None, "x" * (MAX_QUERY_CHARS + 1)])
def test_parse_query_refuses_empty_and_overlong_text(query):
    with pytest.raises(QueryError) as e:
        parse_query(query)
    assert e.value.status == 422 and str(e.value)


def test_rank_images_keeps_the_best_item_per_image_and_marks_confident_ones():
    rows = {1: (10, 0.9), 2: (10, 0.5), 3: (20, None), 4: (30, 0.8)}
    r = rank_images([(2, 0.61), (1, 0.61), (3, 0.7), (4, 0.3), (99, 0.99)], rows, floor=0.6)
    # item 99 is gone (not in rows); equal similarities: the surer detection (item 1) first
    assert r.ranked == [(20, 0.7), (10, 0.61), (30, 0.3)]
    assert r.first_item == {20: (0.7, 3), 10: (0.61, 1), 30: (0.3, 4)}
    assert r.confident == {10, 20}


def test_rank_images_strong_items_and_allowed_images():
    rows = {1: (10, None), 2: (20, None), 3: (30, None)}
    r = rank_images([(1, 0.2), (2, 0.1), (3, 0.05)], rows, floor=math.inf, strong=[3], allowed={10, 30})
    assert r.ranked == [(10, 0.2), (30, 0.05)] and r.confident == {30}


def test_best_items_prefers_dense_similarity_then_lexical_then_whole_image():
    a = ImageRanking([(1, 0.5)], set(), {1: (0.5, 11)})
    b = ImageRanking([(1, 0.5), (2, 0.4)], set(), {1: (0.5, 12), 2: (0.4, 21)})
    lexical = ImageRanking([(3, 2.0), (2, 1.0)], {3}, {3: (2.0, 31), 2: (1.0, 22)})
    got = best_items([a, b], lexical, {2: 200, 4: 400})
    assert got == {1: 11, 2: 21, 3: 31, 4: 400}  # a tie goes to the first space; dense beats lexical


def test_phrase_ranking_puts_confident_then_recent_images_first():
    assert phrase_ranking({5, 7, 9}, {5}) == [(5, 1.0), (9, 1.0), (7, 1.0)]


def test_decide_keeps_confident_images_and_counts_the_hidden_weak_ones():
    ranked = {"text": [(1, 0.9), (2, 0.8), (3, 0.7)], "lexical": [(3, 1.0)]}
    d = decide(ranked, {3}, top_k=2, include_weak=False)
    assert [i for i, _ in d.chosen] == [3] and d.found and d.hidden == 1
    d = decide(ranked, {3}, top_k=2, include_weak=True)
    assert [i for i, _ in d.chosen] == [3, 1] and d.hidden == 0
    nothing = decide(ranked, set(), top_k=10, include_weak=False)
    assert nothing.chosen == [] and not nothing.found and nothing.hidden == 3


def test_nothing_found_says_how_many_are_hidden():
    assert nothing_found("zebra", 0) == "nothing in this index looks like 'zebra'"
    assert "3 weaker results" in nothing_found("zebra", 3) and "include_weak=true" in nothing_found("zebra", 3)


@pytest.mark.parametrize(("query", "canonical"), [
    ("dog", "a photo of a dog"), ("a dog", "a photo of a dog"), ("dogs", "a photo of a dog"),
    ("a photo of a dog", "a photo of a dog"), ("Photos of dogs.", "a photo of a dog"),
    ("people", "a photo of a person"),
    ("knives", "a photo of a knife"), ("an orange", "a photo of an orange"), ("buses", "a photo of a bus"),
    ("tennis racket", "a photo of a tennis racket"), ("glass", "a photo of a glass"),
    ("The dog is playing with his toy in the grass", None), ("two dogs", None), ("3 cats", None),
    ('"EXIT" sign', None), ("", None),
])
def test_a_query_naming_a_thing_has_one_canonical_form(query, canonical):
    from clip_embedder.search.text import short_form

    assert short_form(query) == canonical


@pytest.mark.parametrize(("query", "counted"), [
    ("two dogs", (2, "dog")), ("3 cats", (3, "cat")), ("a photo of two people", (2, "person")),
    ("Two dining tables.", (2, "dining table")), ("dogs", None), ("a dog", None),
    ("two men walking on a beach with their dogs at sunset", None), ("two men walking on a beach", None),
])
def test_a_count_names_how_many_of_what(query, counted):
    from clip_embedder.search.text import count_query

    assert count_query(query) == counted


def test_colour_words_are_found_but_not_the_fruit():
    from clip_embedder.search.text import unused_colours

    assert unused_colours("A red car next to a Blue bus") == ["red", "blue"]
    assert unused_colours("an orange on a table") == []


def test_colour_words_pair_with_the_detected_class_they_describe():
    labels = {"car", "bus", "dog", "traffic light", "person"}
    assert colour_pairs("a red car", labels) == [("red", "car")]
    assert colour_pairs("grey double decker buses", labels) == [("gray", "bus")]
    assert colour_pairs("A black dog next to a white car.", labels) == [("black", "dog"), ("white", "car")]
    assert colour_pairs("a green traffic light", labels) == [("green", "traffic light")]
    assert colour_pairs("a red balloon", labels) == []  # no detected class: the colour stays unchecked


def test_colour_names_of_plain_patches():
    from PIL import Image

    from clip_embedder.indexing.colours import crop_colours

    for name, rgb in [("red", (200, 20, 20)), ("yellow", (240, 220, 30)), ("green", (30, 160, 40)),
                      ("blue", (30, 60, 200)), ("brown", (120, 70, 30)), ("pink", (250, 170, 190)),
                      ("black", (15, 15, 15)), ("white", (245, 245, 245)), ("gray", (128, 128, 128))]:
        assert crop_colours(Image.new("RGB", (64, 64), rgb)) == [name]
    half = Image.new("RGB", (64, 64), (200, 20, 20))
    half.paste((30, 60, 200), (0, 32, 64, 64))  # the central region is half red, half blue
    assert sorted(crop_colours(half)) == ["blue", "red"]
    assert crop_colours(Image.new("RGB", (3, 3), (200, 20, 20))) == []


def test_things_joined_by_and_are_a_list_not_a_sentence():
    assert conjunction_parts("a man and a woman") == ["man", "woman"]
    assert conjunction_parts("Photos of cats, dogs and a bird.") == ["cat", "dog", "bird"]
    assert conjunction_parts("hot dogs and buns") == ["hot dog", "bun"]
    assert conjunction_parts("A cat and a dog lying together") is None  # a sentence: its parts are not names
    assert conjunction_parts("a dog") is None


def test_a_sentence_needs_half_of_its_content_words_to_match_surely():
    """"A man playing the accordion on the street" is not answered by a photo whose keywords hold "man" alone."""
    sentence = parse_query("A man playing the accordion on the street.")
    groups = content_groups(sentence.rest)
    assert groups == [["man"], ["playing"], ["accordion"], ["street"]]
    assert sentence_min_groups(sentence, groups) == 2
    for short in ("dogs", "two dogs", "a man and a woman", "a red car"):
        parsed = parse_query(short)
        assert sentence_min_groups(parsed, content_groups(parsed.rest)) == 1, short
